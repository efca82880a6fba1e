//! Turning a peer away with a reason it can read, before its connection opens.
//!
//! The same codes serve every transport: 4000 + an HTTP status, so 4401 says "unauthorized"
//! and 4403 "forbidden" whether the peer is a page (the code of the WebSocket's close, which
//! a page can read where it cannot read an HTTP refusal), a program over WebSocket, or a
//! gotalk peer over TCP or TLS (the [`REFUSED`] notification, see below). They sit in the
//! WebSocket range for applications (4000–4999), above gotalk.js's 4000 + protocol error
//! code (4000–4003).
//!
//! Over TCP, a refused peer is read from until its version (and, from a client of ours, the
//! hello that follows it in the same write) has arrived, then sent `01`, the [`REFUSED`]
//! notification if it said the hello, and ProtocolError 0 (abnormal), in one write. Other
//! gotalk peers see the abnormal ProtocolError they see for any refusal; ours read the
//! notification within their handshake and fail to connect with [`Error::Refused`].

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gotalk_protocol::reserved::{is_hello, REFUSED};
use gotalk_protocol::{decode_version, Decoder, Frame, Name, ProtocolErrorCode};

use crate::error::{CloseReason, Error};
use crate::transport::{FrameReader, FrameWriter, ReadEvent};

/// The most bytes of a reason that go out: what a WebSocket close frame can carry.
const MAX_REASON: usize = 123;

/// How long a refused peer's hello is waited for once its version has arrived: our clients
/// write the two together, so it is there at once or not at all.
const HELLO_WAIT: Duration = Duration::from_millis(50);

/// Why a connection is refused: a code and a reason the peer may read.
///
/// ```
/// let refusal = gotalk::Refusal::unauthorized("log in first");
/// assert_eq!(refusal.code(), 4401);
/// assert_eq!(gotalk::Refusal::from_status(429, "slow down").code(), 4429);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    code: u16,
    reason: String,
}

impl Refusal {
    /// The code for a peer that has not said who it is.
    pub const UNAUTHORIZED: u16 = 4401;
    /// The code for a peer that may not connect.
    pub const FORBIDDEN: u16 = 4403;

    /// A refusal with `code` (4000–4999; others become 4400) and `reason`, cut to 123 bytes
    /// (what a WebSocket close frame carries).
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        let code = if (4000..=4999).contains(&code) { code } else { 4400 };
        let mut reason = reason.into();
        if reason.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Refusal { code, reason }
    }

    /// The refusal for an HTTP status: code 4000 + `status` (400–999), else 4400.
    pub fn from_status(status: u16, reason: impl Into<String>) -> Self {
        let code = if (400..=999).contains(&status) { 4000 + status } else { 4400 };
        Self::new(code, reason)
    }

    /// 4401: the peer has not said who it is. Clients of ours stop reconnecting on it.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self::new(Self::UNAUTHORIZED, reason)
    }

    /// 4403: the peer may not connect. Clients of ours stop reconnecting on it.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(Self::FORBIDDEN, reason)
    }

    /// The close code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The reason a refused connection closes with.
    pub fn close_reason(&self) -> CloseReason {
        CloseReason::Refused { code: self.code, reason: self.reason.clone() }
    }

    /// The error a client sees.
    pub fn into_error(self) -> Error {
        Error::Refused { code: self.code, reason: self.reason }
    }

    fn notification(&self) -> Frame {
        let payload = serde_json::json!({ "code": self.code, "reason": self.reason });
        Frame::Notification {
            name: Name::new(REFUSED).unwrap_or_else(|_| unreachable_name()),
            payload: Bytes::from(payload.to_string()),
        }
    }
}

/// `$refused` is a valid name; this keeps a panic out of the code path all the same.
fn unreachable_name() -> Name {
    Name::default()
}

/// Turns away a peer over a gotalk byte stream (TCP or TLS), as the module says, within
/// `deadline`; then reads what it still sends for a while, so it reads the refusal rather
/// than a reset.
pub(crate) async fn refuse<R: FrameReader, W: FrameWriter>(
    mut reader: R,
    mut writer: W,
    refusal: &Refusal,
    deadline: Duration,
) {
    let mut buf = BytesMut::new();
    let ours = tokio::time::timeout(deadline, said_hello(&mut reader, &mut buf)).await;
    writer.buffer_version();
    if ours == Ok(true) {
        writer.buffer_frame(&refusal.notification());
    }
    writer.buffer_frame(&Frame::protocol_error(ProtocolErrorCode::Abnormal));
    let second = Duration::from_secs(1);
    let _ = tokio::time::timeout(second, writer.flush()).await;
    let _ = tokio::time::timeout(second, writer.shutdown(&refusal.close_reason())).await;
    crate::linger::discard_input(&mut reader, &mut buf).await;
}

/// Reads the peer's version, then says whether the hello follows it.
async fn said_hello<R: FrameReader>(reader: &mut R, buf: &mut BytesMut) -> bool {
    loop {
        match decode_version(buf) {
            Ok(Some(_)) => break,
            Ok(None) => {}
            Err(_) => return false,
        }
        match reader.read(buf, Some(2)).await {
            Ok(ReadEvent::Data(_) | ReadEvent::Partial(_)) => {}
            _ => return false,
        }
    }
    let mut decoder = Decoder::new();
    loop {
        let mut peek = buf.clone();
        match decoder.decode(&mut peek) {
            Ok(Some(frame)) => return is_hello(&frame),
            Ok(None) => decoder = Decoder::new(),
            Err(_) => return false,
        }
        let more = tokio::time::timeout(HELLO_WAIT, reader.read(buf, Some(13))).await;
        if !matches!(more, Ok(Ok(ReadEvent::Data(_) | ReadEvent::Partial(_)))) {
            return false;
        }
    }
}

/// What follows the server's version, for a client of ours in its handshake.
pub(crate) enum Peek {
    /// Not a refusal.
    No,
    /// Could be the start of one: read more.
    More,
    /// The server refused us.
    Refused(CloseReason),
}

/// Looks at what follows the server's version in `buf` without taking it.
pub(crate) fn peek(buf: &[u8]) -> Peek {
    let mut header = Vec::with_capacity(12);
    header.push(b'n');
    header.extend_from_slice(format!("{:03x}", REFUSED.len()).as_bytes());
    header.extend_from_slice(REFUSED.as_bytes());
    let n = buf.len().min(header.len());
    if buf.is_empty() || buf[..n] != header[..n] {
        return Peek::No;
    }
    let mut copy = BytesMut::from(buf);
    match Decoder::new().max_payload(1024).decode(&mut copy) {
        Ok(Some(Frame::Notification { payload, .. })) => {
            #[derive(serde::Deserialize)]
            struct Wire {
                code: u16,
                reason: String,
            }
            match serde_json::from_slice::<Wire>(&payload) {
                Ok(w) => Peek::Refused(CloseReason::Refused { code: w.code, reason: w.reason }),
                Err(_) => Peek::No,
            }
        }
        Ok(None) => Peek::More,
        _ => Peek::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_stay_in_the_application_range_and_reasons_fit_a_close_frame() {
        assert_eq!(Refusal::from_status(401, "x").code(), 4401);
        assert_eq!(Refusal::from_status(999, "x").code(), 4999);
        assert_eq!(Refusal::from_status(200, "x").code(), 4400);
        assert_eq!(Refusal::new(1000, "x").code(), 4400);
        assert_eq!(Refusal::new(4999, "x").code(), 4999);
        let long = Refusal::forbidden("é".repeat(100));
        assert!(long.reason().len() <= MAX_REASON && long.reason().len() >= MAX_REASON - 1);
    }

    #[test]
    fn a_refusal_is_found_after_the_version_whole_or_in_part() {
        let mut wire = BytesMut::new();
        Refusal::unauthorized("log in first").notification().encode(&mut wire);
        let refused = CloseReason::Refused { code: 4401, reason: "log in first".into() };
        assert!(matches!(peek(&wire), Peek::Refused(r) if r == refused));
        for cut in 1..wire.len() {
            assert!(matches!(peek(&wire[..cut]), Peek::More), "{cut}");
        }
        assert!(matches!(peek(b""), Peek::No));
        assert!(matches!(peek(b"R$hi!00000000"), Peek::No));
        assert!(matches!(peek(b"n005hello00000000"), Peek::No));
    }
}
