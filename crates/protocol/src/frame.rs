//! The gotalk message types.

use std::fmt;

use bytes::Bytes;

/// The protocol version this crate speaks, sent as `01` by each side when a connection opens.
pub const VERSION: u8 = 1;

/// The longest operation or notification name the wire can carry (three hex digits).
pub const MAX_NAME_LEN: usize = 0xfff;

/// A request id: four opaque bytes chosen by the requester and echoed back unchanged.
///
/// The Go client uses a little-endian counter (its first id is four zero bytes); gotalk.js uses
/// base-36 text. Nothing may assume an id is printable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 4]);

impl Id {
    /// The id for counter value `n`, laid out little-endian as the Go client does.
    pub fn from_u32(n: u32) -> Self {
        Id(n.to_le_bytes())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({self})")
    }
}

impl fmt::Display for Id {
    /// Printable ids show as text, others as hex, so logs stay readable for both peers' styles.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.iter().all(|b| b.is_ascii_graphic()) {
            for &b in &self.0 {
                write!(f, "{}", b as char)?;
            }
            Ok(())
        } else {
            write!(f, "0x")?;
            for &b in &self.0 {
                write!(f, "{b:02x}")?;
            }
            Ok(())
        }
    }
}

/// An operation or notification name: UTF-8 text of at most [`MAX_NAME_LEN`] bytes.
///
/// The length is checked when the name is made, which is what lets encoding never fail.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Name(String);

/// A name longer than [`MAX_NAME_LEN`] bytes was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("name is {len} bytes, longer than the {max} bytes gotalk allows")]
pub struct NameTooLong {
    /// The name's length in bytes.
    pub len: usize,
    /// The limit it broke.
    pub max: usize,
}

impl Name {
    /// Makes a name.
    ///
    /// # Errors
    /// [`NameTooLong`] when `name` is longer than [`MAX_NAME_LEN`] bytes.
    pub fn new(name: impl Into<String>) -> Result<Self, NameTooLong> {
        let name = name.into();
        if name.len() > MAX_NAME_LEN {
            return Err(NameTooLong { len: name.len(), max: MAX_NAME_LEN });
        }
        Ok(Name(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name's length in bytes, as the wire counts it.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty name, which handler tables use for their fallback.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Takes the text out.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for Name {
    type Error = NameTooLong;
    fn try_from(name: &str) -> Result<Self, NameTooLong> {
        Name::new(name)
    }
}

impl TryFrom<String> for Name {
    type Error = NameTooLong;
    fn try_from(name: String) -> Result<Self, NameTooLong> {
        Name::new(name)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The type byte that starts every message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MsgType {
    /// `r`: a request with one payload.
    SingleRequest,
    /// `s`: the first part of a streaming request.
    StreamRequest,
    /// `p`: a further part of a streaming request; empty ends it.
    StreamRequestPart,
    /// `R`: a result with one payload.
    SingleResult,
    /// `S`: one part of a streaming result; empty ends it.
    StreamResult,
    /// `E`: the request failed; the payload is plain UTF-8 text.
    ErrorResult,
    /// `e`: the responder cannot take the request now; retry after a wait.
    RetryResult,
    /// `n`: a message that is never answered.
    Notification,
    /// `h`: the sender's load and clock.
    Heartbeat,
    /// `f`: the connection is being closed because of a protocol fault.
    ProtocolError,
}

impl MsgType {
    /// The type for a wire byte, if it is one of the ten.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'r' => MsgType::SingleRequest,
            b's' => MsgType::StreamRequest,
            b'p' => MsgType::StreamRequestPart,
            b'R' => MsgType::SingleResult,
            b'S' => MsgType::StreamResult,
            b'E' => MsgType::ErrorResult,
            b'e' => MsgType::RetryResult,
            b'n' => MsgType::Notification,
            b'h' => MsgType::Heartbeat,
            b'f' => MsgType::ProtocolError,
            _ => return None,
        })
    }

    /// The wire byte.
    pub fn byte(self) -> u8 {
        match self {
            MsgType::SingleRequest => b'r',
            MsgType::StreamRequest => b's',
            MsgType::StreamRequestPart => b'p',
            MsgType::SingleResult => b'R',
            MsgType::StreamResult => b'S',
            MsgType::ErrorResult => b'E',
            MsgType::RetryResult => b'e',
            MsgType::Notification => b'n',
            MsgType::Heartbeat => b'h',
            MsgType::ProtocolError => b'f',
        }
    }
}

/// The codes a ProtocolError (`f`) carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProtocolErrorCode {
    /// 0: closed because of an abnormal condition.
    Abnormal,
    /// 1: the other side does not speak our protocol version.
    Unsupported,
    /// 2: an invalid message was received.
    InvalidMessage,
    /// 3: communicating took too long.
    Timeout,
    /// Any code the document does not define.
    Other(u32),
}

impl ProtocolErrorCode {
    /// The code for its wire number.
    pub fn from_u32(code: u32) -> Self {
        match code {
            0 => ProtocolErrorCode::Abnormal,
            1 => ProtocolErrorCode::Unsupported,
            2 => ProtocolErrorCode::InvalidMessage,
            3 => ProtocolErrorCode::Timeout,
            n => ProtocolErrorCode::Other(n),
        }
    }

    /// The wire number.
    pub fn as_u32(self) -> u32 {
        match self {
            ProtocolErrorCode::Abnormal => 0,
            ProtocolErrorCode::Unsupported => 1,
            ProtocolErrorCode::InvalidMessage => 2,
            ProtocolErrorCode::Timeout => 3,
            ProtocolErrorCode::Other(n) => n,
        }
    }
}

impl fmt::Display for ProtocolErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolErrorCode::Abnormal => f.write_str("abnormal condition"),
            ProtocolErrorCode::Unsupported => f.write_str("unsupported protocol"),
            ProtocolErrorCode::InvalidMessage => f.write_str("invalid protocol message"),
            ProtocolErrorCode::Timeout => f.write_str("timeout"),
            ProtocolErrorCode::Other(n) => write!(f, "protocol error {n}"),
        }
    }
}

/// One gotalk message.
///
/// Payload lengths must fit the 8-hex-digit size field (at most `u32::MAX` bytes); the sock
/// checks that before it builds a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// `r`: a request with one payload.
    SingleRequest {
        /// Chosen by the requester.
        id: Id,
        /// The operation.
        op: Name,
        /// Parameters, JSON or raw bytes.
        payload: Bytes,
    },
    /// `s`: opens a streaming request; more parts follow as [`Frame::StreamRequestPart`].
    StreamRequest {
        /// Chosen by the requester.
        id: Id,
        /// The operation.
        op: Name,
        /// The first part.
        payload: Bytes,
    },
    /// `p`: a part of a streaming request; an empty payload ends the stream.
    StreamRequestPart {
        /// The stream request's id.
        id: Id,
        /// The part.
        payload: Bytes,
    },
    /// `R`: a result with one payload.
    SingleResult {
        /// The request's id.
        id: Id,
        /// The result.
        payload: Bytes,
    },
    /// `S`: a part of a streaming result; an empty payload ends the stream.
    StreamResult {
        /// The request's id.
        id: Id,
        /// The part.
        payload: Bytes,
    },
    /// `E`: the request failed and should not be retried as is.
    ErrorResult {
        /// The request's id.
        id: Id,
        /// The error message as plain UTF-8 text.
        payload: Bytes,
    },
    /// `e`: the responder cannot serve the request now.
    RetryResult {
        /// The request's id.
        id: Id,
        /// Milliseconds to wait before retrying; zero means at once.
        wait: u32,
        /// A description, such as `request rate limit`.
        payload: Bytes,
    },
    /// `n`: a message that is never answered.
    Notification {
        /// What kind of notification.
        name: Name,
        /// Its value.
        payload: Bytes,
    },
    /// `h`: the sender's load (0 idle, 0xffff dying) and its clock in unix seconds.
    Heartbeat {
        /// How pressured the sender is.
        load: u16,
        /// The sender's clock, unix seconds.
        time: u32,
    },
    /// `f`: the sender is closing the connection because of a protocol fault.
    ProtocolError {
        /// Why.
        code: u32,
    },
}

impl Frame {
    /// This frame's type.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Frame::SingleRequest { .. } => MsgType::SingleRequest,
            Frame::StreamRequest { .. } => MsgType::StreamRequest,
            Frame::StreamRequestPart { .. } => MsgType::StreamRequestPart,
            Frame::SingleResult { .. } => MsgType::SingleResult,
            Frame::StreamResult { .. } => MsgType::StreamResult,
            Frame::ErrorResult { .. } => MsgType::ErrorResult,
            Frame::RetryResult { .. } => MsgType::RetryResult,
            Frame::Notification { .. } => MsgType::Notification,
            Frame::Heartbeat { .. } => MsgType::Heartbeat,
            Frame::ProtocolError { .. } => MsgType::ProtocolError,
        }
    }

    /// The request id, for the eight types that carry one.
    pub fn id(&self) -> Option<Id> {
        match self {
            Frame::SingleRequest { id, .. }
            | Frame::StreamRequest { id, .. }
            | Frame::StreamRequestPart { id, .. }
            | Frame::SingleResult { id, .. }
            | Frame::StreamResult { id, .. }
            | Frame::ErrorResult { id, .. }
            | Frame::RetryResult { id, .. } => Some(*id),
            Frame::Notification { .. } | Frame::Heartbeat { .. } | Frame::ProtocolError { .. } => {
                None
            }
        }
    }

    /// The payload; empty for heartbeats and protocol errors.
    pub fn payload(&self) -> &Bytes {
        static EMPTY: Bytes = Bytes::from_static(b"");
        match self {
            Frame::SingleRequest { payload, .. }
            | Frame::StreamRequest { payload, .. }
            | Frame::StreamRequestPart { payload, .. }
            | Frame::SingleResult { payload, .. }
            | Frame::StreamResult { payload, .. }
            | Frame::ErrorResult { payload, .. }
            | Frame::RetryResult { payload, .. }
            | Frame::Notification { payload, .. } => payload,
            Frame::Heartbeat { .. } | Frame::ProtocolError { .. } => &EMPTY,
        }
    }

    /// A protocol error frame with a known code.
    pub fn protocol_error(code: ProtocolErrorCode) -> Self {
        Frame::ProtocolError { code: code.as_u32() }
    }
}
