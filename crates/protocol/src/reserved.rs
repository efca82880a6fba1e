//! Who may be sent the reserved messages, and how our peers recognise each other.
//!
//! Our peers use messages of their own: the probe request `$ping`, the notification `$done`
//! and the relay's `$id`, `$relay` and `$undelivered`. The original Go gotalk and gotalk.js
//! give a name they have no handler for to the application's catch-all handler, if it has
//! one, so these go only to peers known to understand them. A peer is known to when
//! - it sent the [`hello`]: a client of ours sends it right after its version, and a server
//!   of ours answers it with its own (and never says it first, so another implementation's
//!   client never gets one). It is a result for the reserved id [`HELLO_ID`], which answers
//!   no request, and every gotalk implementation (Go's reader, gotalk.js, ours) drops a
//!   result for an id it is not waiting for, before any handler could see it;
//! - it is a WebSocket client that declared RetryResult in its URL ([`crate::retry::QUERY`]),
//!   as the browser client does;
//! - it sent one of the reserved messages itself.
//!
//! Nothing else marks a peer: an original Go or gotalk.js peer never sees a `$` message.

use bytes::Bytes;

use crate::frame::{Frame, Id};

/// The id of the hello. No requester is waiting for it when the hello arrives: Go's counter
/// and ours are little-endian and reach it only after 560 million requests on a connection,
/// and gotalk.js's ids are base-36 text, without `$`.
pub const HELLO_ID: Id = Id(*b"$hi!");

/// The notification by which a server of ours tells a client of ours why it refused the
/// connection, right after its version and before ProtocolError 0. Its payload is JSON,
/// `{"code":4401,"reason":"log in first"}`. Sent only to a peer that said the hello.
pub const REFUSED: &str = "$refused";

/// The hello: an empty result for [`HELLO_ID`].
pub fn hello() -> Frame {
    Frame::SingleResult { id: HELLO_ID, payload: Bytes::new() }
}

/// True for the hello.
pub fn is_hello(frame: &Frame) -> bool {
    matches!(frame, Frame::SingleResult { id, .. } if *id == HELLO_ID)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn the_hello_is_an_empty_result_for_its_own_id() {
        let mut wire = BytesMut::new();
        hello().encode(&mut wire);
        assert_eq!(&wire[..], b"R$hi!00000000");
        assert!(is_hello(&hello()));
        let other = Frame::SingleResult { id: Id(*b"0000"), payload: Bytes::new() };
        assert!(!is_hello(&other));
        let error = Frame::ErrorResult { id: HELLO_ID, payload: Bytes::new() };
        assert!(!is_hello(&error));
    }
}
