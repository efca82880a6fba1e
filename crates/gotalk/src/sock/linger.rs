//! After the read loop closes the connection for a protocol error or a limit: the reason is
//! on its way (the write loop sends it, then shuts the sending side), and what the peer
//! still sends is discarded for a while so the peer reads it (see `crate::linger`).

use bytes::BytesMut;

use super::{lock, Sock, TransportKind};
use crate::transport::FrameReader;

impl Sock {
    /// Reads and discards what the peer still sends, for a bounded time. Over WebSocket
    /// the close handshake does this job.
    pub(super) async fn linger<R: FrameReader>(&self, reader: &mut R, buf: &mut BytesMut) {
        if self.info().transport == TransportKind::WebSocket {
            return;
        }
        // The socket is open until the reader goes too: its places (the listener's permits,
        // its registry entry) are held as long.
        let places = std::mem::take(&mut *lock(&self.shared.attachments));
        crate::linger::discard_input(reader, buf).await;
        drop(places);
    }
}
