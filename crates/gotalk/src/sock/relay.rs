//! The relay's hooks into a connection: its id and mailbox from open to close, and the
//! reserved `whoami` and `$relay` messages, answered on the read loop without a handler task
//! (they only validate and queue, never wait on another peer).

use std::sync::Arc;

use bytes::Bytes;
use gotalk_protocol::relay::{self as wire, Fault, PeerId};
use gotalk_protocol::{Frame, Id, Name};
use tracing::Instrument;

use super::{Outbound, Sock};
use crate::error::CloseReason;
use crate::relay::{Mailbox, Relay, Undeliverable};

/// Why a message was not relayed.
enum NotSent {
    Fault(Fault),
    QueueFull,
}

fn name(name: &'static str) -> Name {
    Name::new(name).expect("a reserved name is short")
}

impl Sock {
    /// The id the relay gave this connection, on a server with the relay on.
    pub fn relay_id(&self) -> Option<PeerId> {
        self.shared.relay_id.get().copied()
    }

    /// Gives a new connection its id: registered, told to a peer that understands the
    /// reserved messages, and its mailbox drained into the connection by a task of its own.
    pub(super) fn relay_attach(&self, relay: &Relay) {
        let id = PeerId::from_random(rand::random());
        if self.shared.relay_id.set(id).is_err() {
            return;
        }
        let mailbox = Mailbox::charged(relay.queue_bytes, Some(self.shared.budget.clone()));
        relay.bus.register(id, mailbox.clone());
        tracing::debug!(parent: &self.shared.span, %id, "relay id");
        if self.peer_understands_reserved() {
            // Queued ahead of the read loop and the on_connect hook, so it is the first
            // message after the hello.
            self.relay_announce();
        }
        let drain = drain(self.clone(), mailbox, relay.stall_timeout);
        tokio::spawn(drain.instrument(self.shared.span.clone()));
    }

    /// Tells the peer its id with `$id`, on a server with the relay on. A peer learned to
    /// understand it only from its hello (over TCP) hears it as soon as that arrives.
    pub(super) fn relay_announce(&self) {
        let Some(id) = self.relay_id() else { return };
        let payload = Bytes::from(format!("\"{id}\""));
        let _ = self.shared.out.push(Outbound::Frame(
            Frame::Notification { name: name(wire::ID), payload },
            None,
            None,
        ));
    }

    /// Removes the connection's id: nothing more is routed to it.
    pub(super) fn relay_detach(&self, relay: &Relay) {
        if let Some(id) = self.relay_id() {
            relay.bus.unregister(id);
        }
    }

    /// Answers a reserved request. False when `op` is not one of the relay's.
    pub(super) async fn relay_request(
        &self,
        relay: &Arc<Relay>,
        id: Id,
        op: &str,
        payload: &Bytes,
    ) -> bool {
        let frame = match op {
            wire::WHOAMI => {
                let me = self.relay_id().map(|me| format!("\"{me}\"")).unwrap_or_default();
                Frame::SingleResult { id, payload: Bytes::from(me) }
            }
            wire::SEND => match self.relay_forward(relay, payload).await {
                Ok(()) => Frame::SingleResult { id, payload: Bytes::new() },
                Err(NotSent::Fault(fault)) => {
                    Frame::ErrorResult { id, payload: Bytes::from(fault.to_string()) }
                }
                Err(NotSent::QueueFull) if self.shared.config.peer_understands_retry => {
                    let wait = self.retry_wait();
                    Frame::RetryResult {
                        id,
                        wait,
                        payload: Bytes::from_static(wire::QUEUE_FULL.as_bytes()),
                    }
                }
                Err(NotSent::QueueFull) => Frame::ErrorResult {
                    id,
                    payload: Bytes::from_static(wire::QUEUE_FULL.as_bytes()),
                },
            },
            _ => return false,
        };
        let _ = self.send(frame).await;
        true
    }

    /// Relays a fire-and-forget message; a failure is reported to the sender as a notice.
    pub(super) async fn relay_notification(&self, relay: &Arc<Relay>, payload: &Bytes) {
        let error = match self.relay_forward(relay, payload).await {
            Ok(()) => return,
            Err(NotSent::Fault(fault)) => fault.to_string(),
            Err(NotSent::QueueFull) => wire::QUEUE_FULL.to_owned(),
        };
        let notice = wire::encode_undelivered(payload, &error);
        let frame = Frame::Notification { name: name(wire::UNDELIVERED), payload: notice.into() };
        let _ = self.send(frame).await;
    }

    /// Validates a message and queues it for its recipient.
    async fn relay_forward(&self, relay: &Relay, payload: &[u8]) -> Result<(), NotSent> {
        let Some(from) = self.relay_id() else {
            return Err(NotSent::Fault(Fault::UnknownPeer));
        };
        let send = wire::parse_send(payload, relay.max_body).map_err(NotSent::Fault)?;
        if let Some(authorize) = &relay.authorize {
            let mut allowed = false;
            crate::handlers::call_hook("relay authorize", || allowed = authorize(self, send.to));
            if !allowed {
                return Err(NotSent::Fault(Fault::UnknownPeer));
            }
        }
        let delivery = Bytes::from(wire::encode_delivery(from, &send));
        relay.bus.deliver(send.to, delivery).await.map_err(|e| match e {
            Undeliverable::QueueFull => NotSent::QueueFull,
            _ => NotSent::Fault(Fault::UnknownPeer),
        })
    }
}

/// Moves deliveries from the mailbox into the connection's send queue. One that cannot get in
/// within `stall` means the peer has stopped reading: it is disconnected, and its id freed.
async fn drain(sock: Sock, mailbox: Mailbox, stall: std::time::Duration) {
    let run = async {
        while let Some(payload) = mailbox.next().await {
            let frame = Frame::Notification { name: name(wire::SEND), payload };
            match tokio::time::timeout(stall, sock.send(frame)).await {
                Ok(Ok(())) => {}
                Ok(Err(_closed)) => return,
                Err(_) => {
                    tracing::debug!(?stall, "relay recipient stalled");
                    sock.close_with(CloseReason::RelayStalled(stall), None);
                    return;
                }
            }
        }
    };
    tokio::select! {
        _ = run => {}
        _ = sock.shared.cancel.cancelled() => {}
    }
    mailbox.close();
}
