//! Closing so the peer reads why. A socket closed with unread bytes in it sends a TCP reset,
//! and a reset makes the peer's kernel drop what it has not read yet (and fails the peer's
//! writes): a peer still sending when it is cut for a protocol error or a limit would never
//! read the ProtocolError that says why. So after the reason is sent and the sending side
//! shut down, what the peer still sends is read and thrown away until it closes its side,
//! for a bounded time and number of bytes, before the socket is dropped.

use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use crate::transport::{FrameReader, ReadEvent};

/// The longest the peer is read from after the reason was sent.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(2);

/// The most bytes read and thrown away after the reason was sent: twice the default payload
/// limit, so a peer in the middle of sending a message over the limit can finish it and
/// then read the reason.
pub(crate) const LINGER_BYTES: usize = 32 << 20;

/// How much one read asks for.
const READ: usize = 64 * 1024;

/// Reads and discards from `reader` (and what `buf` holds) until the peer closes its side, an
/// error, [`LINGER_TIME`] or [`LINGER_BYTES`], whichever comes first.
pub(crate) async fn discard_input<R: FrameReader>(reader: &mut R, buf: &mut BytesMut) {
    let deadline = Instant::now() + LINGER_TIME;
    let mut discarded = buf.len();
    buf.clear();
    while discarded < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, reader.read(buf, Some(READ))).await {
            Ok(Ok(ReadEvent::Data(n))) => {
                discarded += n;
                buf.clear();
            }
            _ => return,
        }
    }
}
