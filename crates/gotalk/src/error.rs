//! Errors a caller of a [`Sock`](crate::Sock) sees, and why a connection closed.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use gotalk_protocol::{DecodeError, NameTooLong, ProtocolErrorCode};

/// Why a connection closed. Every pending request on it fails with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// This side closed it with [`Sock::close`](crate::Sock::close).
    Local,
    /// This side ended it gracefully with [`Sock::end`](crate::Sock::end).
    Ended,
    /// The peer closed the connection at a message boundary.
    PeerClosed,
    /// The peer closed the connection in the middle of a message.
    PeerClosedMidMessage,
    /// The peer sent a ProtocolError.
    PeerProtocolError(ProtocolErrorCode),
    /// This side closed it with a ProtocolError, sent to the peer first.
    LocalProtocolError(ProtocolErrorCode),
    /// The peer sent bytes that are not a gotalk message; it was sent ProtocolError 2.
    InvalidMessage(String),
    /// The peer speaks another protocol version; it was sent ProtocolError 1.
    UnsupportedVersion(u8),
    /// Nothing arrived within the read timeout; the peer was sent ProtocolError 3.
    ReadTimeout(Duration),
    /// A message's first byte arrived and its last did not within the frame timeout; the
    /// peer was sent ProtocolError 3.
    FrameTimeout(Duration),
    /// The handshake did not complete within the handshake timeout.
    HandshakeTimeout(Duration),
    /// A write did not complete within the write timeout: the peer stopped reading.
    WriteTimeout(Duration),
    /// The transport failed.
    Io(String),
    /// The server is shutting down.
    Shutdown,
    /// Liveness checks declared the peer dead (unanswered probes, a probe timeout); it was
    /// sent ProtocolError 3.
    PeerDead(String),
    /// The peer shut down its sending side, and the requests it had sent were not all
    /// answered within this long (the write timeout); it was sent ProtocolError 3.
    AnswerTimeout(Duration),
    /// An [extension](crate::Extension) closed the connection.
    Extension {
        /// The extension's name, to tell its reasons from others'.
        name: &'static str,
        /// What happened, as the reason displays.
        detail: String,
        /// True when the peer stopped keeping up in time, as for the timeouts (see
        /// [`is_timeout`](CloseReason::is_timeout)).
        timeout: bool,
    },
    /// The server refused the connection before it opened, with a close code (see
    /// [`Refusal`](crate::Refusal)) and a reason the peer may read.
    Refused {
        /// 4000 + an HTTP status: 4401 unauthorized, 4403 forbidden.
        code: u16,
        /// Why, as the server said it.
        reason: String,
    },
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("socket closed by this side"),
            CloseReason::Ended => f.write_str("socket ended by this side"),
            CloseReason::PeerClosed => f.write_str("connection closed by peer"),
            CloseReason::PeerClosedMidMessage => {
                f.write_str("connection closed by peer in the middle of a message")
            }
            CloseReason::PeerProtocolError(code) => {
                write!(f, "peer reported protocol error: {code}")
            }
            CloseReason::LocalProtocolError(code) => {
                write!(f, "closed with protocol error: {code}")
            }
            CloseReason::InvalidMessage(why) => write!(f, "invalid message from peer: {why}"),
            CloseReason::UnsupportedVersion(v) => {
                write!(f, "peer speaks unsupported protocol version {v}")
            }
            CloseReason::ReadTimeout(d) => write!(f, "read timeout: nothing received for {d:?}"),
            CloseReason::FrameTimeout(d) => {
                write!(f, "frame timeout: a message took longer than {d:?} to arrive")
            }
            CloseReason::HandshakeTimeout(d) => write!(f, "handshake timeout after {d:?}"),
            CloseReason::WriteTimeout(d) => write!(f, "write timeout: peer not reading for {d:?}"),
            CloseReason::Io(e) => write!(f, "connection error: {e}"),
            CloseReason::Shutdown => f.write_str("server shutting down"),
            CloseReason::PeerDead(why) => write!(f, "timeout: peer declared dead: {why}"),
            CloseReason::AnswerTimeout(d) => {
                write!(f, "peer stopped sending; its requests were not answered within {d:?}")
            }
            CloseReason::Extension { detail, .. } => f.write_str(detail),
            CloseReason::Refused { code, reason } => write!(f, "refused ({code}): {reason}"),
        }
    }
}

impl CloseReason {
    /// True when the connection closed because the peer stopped answering in time: a read,
    /// frame, handshake or write timeout, failed liveness probes, or an extension's timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            CloseReason::ReadTimeout(_)
                | CloseReason::FrameTimeout(_)
                | CloseReason::HandshakeTimeout(_)
                | CloseReason::WriteTimeout(_)
                | CloseReason::PeerDead(_)
                | CloseReason::AnswerTimeout(_)
                | CloseReason::Extension { timeout: true, .. }
        )
    }
}

impl From<DecodeError> for CloseReason {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Truncated => CloseReason::PeerClosedMidMessage,
            other => CloseReason::InvalidMessage(other.to_string()),
        }
    }
}

/// What can go wrong with a request, a notification or a stream.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer answered with an ErrorResult; this is its text.
    #[error("{0}")]
    Remote(String),
    /// The peer kept answering with RetryResult and the retries ran out.
    #[error("peer asked to retry after {wait:?} ({message}); gave up after {attempts} attempts")]
    Retry {
        /// The last wait the peer asked for.
        wait: Duration,
        /// The peer's description, such as `request rate limit`.
        message: String,
        /// How many times the request was sent.
        attempts: u32,
    },
    /// No result arrived within the call's timeout (its own, or the connection's
    /// [`request_timeout`](crate::Config::request_timeout)). The call was abandoned here and its
    /// entry freed; the peer was not told (the protocol has no cancel message), and a result
    /// that arrives later is dropped and counted in
    /// [`Sock::late_results`](crate::Sock::late_results).
    #[error("no result within {0:?}; the call was abandoned")]
    Timeout(Duration),
    /// The connection closed before the request completed.
    #[error("socket is closed: {0}")]
    Closed(CloseReason),
    /// [`Sock::end`](crate::Sock::end) was called; no new requests are sent.
    #[error("socket is ending")]
    Ending,
    /// An operation or notification name is too long for the wire.
    #[error(transparent)]
    NameTooLong(#[from] NameTooLong),
    /// A payload is larger than the wire or the configured limit allows.
    #[error("payload of {size} bytes exceeds the limit of {max}")]
    PayloadTooLarge {
        /// The payload's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A value could not be encoded or a result could not be decoded as JSON.
    #[error("json: {0}")]
    Json(Arc<serde_json::Error>),
    /// Parts of a streaming result arrived faster than they were read and overflowed the
    /// stream's buffer.
    #[error("stream buffer of {0} bytes overflowed; the stream was abandoned")]
    StreamOverflow(usize),
    /// Holding more of a result or a stream would have spent a memory budget; the call or
    /// stream was abandoned.
    #[error("{0}; the call or stream was abandoned")]
    OverBudget(crate::memory::Exhausted),
    /// The stream was already ended.
    #[error("stream already ended")]
    StreamEnded,
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(String),
    /// The server refused the connection, and said why: its `on_connect` hook turned this
    /// client away. Retrying will not help until what the reason names changes (a login).
    #[error("connection refused ({code}): {reason}")]
    Refused {
        /// 4000 + an HTTP status: 4401 unauthorized, 4403 forbidden (see
        /// [`Refusal`](crate::Refusal)).
        code: u16,
        /// Why, as the server said it.
        reason: String,
    },
    /// A [`KeepAlive`](crate::keepalive::KeepAlive) call waited this long for a connection
    /// and none came; it was never sent.
    #[error("no connection within {0:?}; the call was not sent")]
    NoConnection(Duration),
    /// This many [`KeepAlive`](crate::keepalive::KeepAlive) calls already wait for a
    /// connection; this one was not sent.
    #[error("{0} calls already wait for a connection; the call was not sent")]
    TooManyWaiting(usize),
}

impl Error {
    /// The refusal a handshake failed with as the caller's error: [`Error::Refused`] for
    /// [`CloseReason::Refused`], else [`Error::Closed`].
    pub(crate) fn from_handshake(reason: CloseReason) -> Error {
        match reason {
            CloseReason::Refused { code, reason } => Error::Refused { code, reason },
            other => Error::Closed(other),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(Arc::new(e))
    }
}
