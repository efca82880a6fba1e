//! The peer shut down its sending side (a TCP FIN) at a message boundary: many one-shot
//! clients (`nc -N`, HTTP-style tools) send their requests, then the FIN, then read. The
//! requests that arrived before it are still answered; then the connection closes.

use std::time::Duration;

use gotalk_protocol::{Frame, ProtocolErrorCode};

use super::{lock, unix_time, Outbound, Sock, TransportKind};
use crate::error::{CloseReason, Error};
use crate::transport::FrameReader;

/// How often a heartbeat goes out while answers are awaited, the first at once. A FIN also
/// comes from a peer that closed entirely, and it answers a heartbeat with a reset: plain
/// TCP sees that at once, other transports when the next heartbeat's write fails. Either
/// way such a peer is let go long before the deadline.
const PROBE_EVERY: Duration = Duration::from_millis(500);

impl Sock {
    /// Waits, after the peer's FIN, until the requests it sent are answered, for at most the
    /// write timeout, and says how the connection ends. Over WebSocket the end of the stream
    /// is the end of the connection (a close frame, or an abnormal end), so it ends at once.
    pub(super) async fn answer_after_fin<R: FrameReader>(
        &self,
        reader: &mut R,
    ) -> (CloseReason, Option<ProtocolErrorCode>) {
        let ended = (CloseReason::PeerClosed, None);
        if self.info().transport == TransportKind::WebSocket {
            return ended;
        }
        // Nothing more can come from the peer: calls to it fail now and new ones at once (a
        // handler calling back its caller gets an error instead of hanging), and request
        // streams left open end with an error instead of waiting for parts.
        self.fail_calls(&CloseReason::PeerClosed);
        self.fail_open_inputs(Error::Closed(CloseReason::PeerClosed));
        let limit = self.shared.config.write_timeout;
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        let mut probe = tokio::time::interval(PROBE_EVERY);
        loop {
            let idle = self.shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if lock(&self.shared.inbound).is_empty() {
                return ended;
            }
            tokio::select! {
                _ = idle => {}
                _ = self.shared.cancel().cancelled() => return ended,
                _ = reader.failed() => return ended,
                _ = &mut deadline => {
                    return (CloseReason::AnswerTimeout(limit), Some(ProtocolErrorCode::Timeout));
                }
                _ = probe.tick() => {
                    // Past the send budget: at most one per tick until the deadline.
                    let load = self.shared.config.heartbeat_load_now();
                    let heartbeat = Frame::Heartbeat { load, time: unix_time() };
                    let _ = self.shared.out.push(Outbound::Frame(heartbeat, None, None));
                }
            }
        }
    }
}
