//! The WebSocket transport: the gateway's server side, and a WebSocket client.
//!
//! gotalk over WebSocket has two rules that real peers depend on:
//! - **Writing:** `01`, every header and every non-empty payload each go in a binary message of
//!   their own. The original gotalk.js parses each message as exactly one header and takes the
//!   next message as its payload. The messages of one batch are flushed together, so the split
//!   costs bytes (a frame header of 2 to 10 per message) but no extra system calls.
//! - **Reading:** text and binary messages are one continuous byte stream. A message may hold
//!   a header and its payload, several whole frames, or part of one; gotalk.js sends headers
//!   as binary messages and JSON payloads as text.
//!
//! The two sides are built differently. The gateway's side ([`server()`]) frames the upgraded
//! connection itself: since messages are only a byte stream to gotalk, it unmasks payloads
//! straight into the sock's read buffer as they arrive, never assembling a message, and writes
//! payloads by reference, so a socket holds no buffer sized by the largest message it once
//! carried. The client ([`connect`], [`Connector`]) runs over tokio-tungstenite's messages,
//! through [`pair`].
//!
//! Our clients declare that they understand RetryResult by adding [`RETRY_QUERY`] to the URL
//! they connect to; the gateway holds requests over the limit for clients that don't, since
//! the original gotalk.js would fail them.
//!
//! # Layout
//! - `frame`: RFC 6455 framing for the server, in place and without I/O.
//! - `utf8`: UTF-8 checked piece by piece, for text messages.
//! - `server`: the gateway's reader and writer over the upgraded connection.
//! - `client`: the reader and writer over a stream of messages, and the client.
//! - `pings`: the budget of pings a peer may send.

mod client;
mod frame;
mod pings;
mod server;
mod utf8;

pub use client::{
    connect, pair, socket_config, Connector, WsError, WsEvent, WsMessage, WsReader, WsWriter,
    UPGRADE_REFUSED,
};
pub use server::{server, server_halves, ServerReader, ServerWriter};

use crate::config::Config;
use crate::error::CloseReason;

/// The query parameter by which a client declares that it understands RetryResult.
pub const RETRY_QUERY: &str = gotalk_protocol::retry::QUERY;

/// The WebSocket close code for a normal close.
pub const CLOSE_NORMAL: u16 = 1000;
/// The WebSocket close code for a server shutting down ("going away"); clients may reconnect
/// soon, to the restarted server.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// The WebSocket close code for a protocol error.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// The WebSocket close code for a peer that broke a rule of this server (too many pings).
pub const CLOSE_POLICY: u16 = 1008;
/// The WebSocket close code for a text message that is not UTF-8.
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// The WebSocket close code for a message over the size limit.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// True for the close code of a refused connection (see [`Refusal`](crate::Refusal)): 4000 +
/// an HTTP status of 400 or more.
pub fn is_refusal(code: u16) -> bool {
    (4400..=4999).contains(&code)
}

/// The largest WebSocket message accepted, counted across its fragments: one payload at the
/// limit plus its header (a header is at most 4,115 bytes, with a name at its 4,095-byte
/// maximum).
pub fn max_message_size(config: &Config) -> usize {
    (config.max_payload as usize).saturating_add(8 * 1024)
}

/// The close code that tells a WebSocket peer why a connection closed.
pub fn close_code(reason: &CloseReason) -> u16 {
    match reason {
        CloseReason::Shutdown => CLOSE_GOING_AWAY,
        CloseReason::PeerProtocolError(_)
        | CloseReason::LocalProtocolError(_)
        | CloseReason::InvalidMessage(_)
        | CloseReason::UnsupportedVersion(_) => CLOSE_PROTOCOL_ERROR,
        CloseReason::Refused { code, .. } => *code,
        _ => CLOSE_NORMAL,
    }
}

/// A close frame's reason is at most 123 bytes.
fn close_text(reason: &CloseReason) -> String {
    let mut text = match reason {
        // The page reads the reason as the server gave it.
        CloseReason::Refused { reason, .. } => reason.clone(),
        other => other.to_string(),
    };
    if text.len() > frame::MAX_CLOSE_REASON {
        let mut end = frame::MAX_CLOSE_REASON;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// True when a request's query declares that the client understands RetryResult.
pub fn declares_retry(query: Option<&str>) -> bool {
    gotalk_protocol::retry::declared(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_are_cut_to_fit_a_close_frame() {
        let long = CloseReason::Io("é".repeat(100));
        let text = close_text(&long);
        assert!(text.len() <= 123 && text.len() >= 121, "{}", text.len());
        assert!(long.to_string().starts_with(&text));
        assert_eq!(close_code(&CloseReason::Shutdown), CLOSE_GOING_AWAY);
        assert_eq!(close_code(&CloseReason::Ended), CLOSE_NORMAL);
        let refused = CloseReason::Refused { code: 4401, reason: "log in first".into() };
        assert_eq!((close_code(&refused), close_text(&refused).as_str()), (4401, "log in first"));
    }
}
