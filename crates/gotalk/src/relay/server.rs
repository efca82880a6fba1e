//! The relay on a server's connections, as an [`Extension`]: each connection's id and
//! mailbox from open to close, and the reserved `whoami` and `$relay` messages, answered on
//! the read loop (they only validate and queue, never wait on another peer).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use gotalk_protocol::relay::{self as wire, Fault, PeerId};
use gotalk_protocol::{Frame, Name};
use tracing::Instrument;

use super::{Mailbox, Relay, Undeliverable};
use crate::error::CloseReason;
use crate::extension::{Answer, Extension};
use crate::sock::Sock;

/// What the relay keeps with each connection.
struct Conn {
    id: PeerId,
    mailbox: Mailbox,
}

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
        self.state::<Conn>().map(|conn| conn.id)
    }
}

impl CloseReason {
    /// The reason a relay recipient is disconnected with when it took no message from its
    /// queue for `stall` (see [`Relay::stall_timeout`]): a timeout, shown as
    /// `relay recipient stalled: no message taken for …`. Named as the variant it stands for.
    #[allow(non_snake_case)]
    pub fn RelayStalled(stall: Duration) -> CloseReason {
        CloseReason::Extension {
            name: "relay",
            detail: format!("relay recipient stalled: no message taken for {stall:?}"),
            timeout: true,
        }
    }
}

impl Extension for Relay {
    fn requests(&self) -> &'static [&'static str] {
        &[wire::WHOAMI, wire::SEND]
    }

    fn notifications(&self) -> &'static [&'static str] {
        &[wire::SEND]
    }

    /// Gives a new connection its id: registered, told to a peer that understands the
    /// reserved messages, and its mailbox drained into the connection by a task of its own.
    fn attach(&self, sock: &Sock) {
        let id = PeerId::from_random(rand::random());
        let mailbox = Mailbox::charged(self.queue_bytes, Some(sock.conn_budget().clone()));
        if sock.set_state(Conn { id, mailbox: mailbox.clone() }).is_err() {
            return;
        }
        self.bus.register(id, mailbox.clone());
        if sock.is_closed() {
            // Closed meanwhile: `detach` may have run before the id was registered.
            self.bus.unregister(id);
            mailbox.close();
            return;
        }
        tracing::debug!(parent: sock.span(), %id, "relay id");
        if sock.peer_understands_reserved() {
            // Sent before the read loop and the on_connect hook run, so it is the first
            // message after the hello.
            announce(sock, id);
        }
        let drain = drain(sock.clone(), mailbox, self.stall_timeout);
        tokio::spawn(drain.instrument(sock.span().clone()));
    }

    /// A peer learned to understand the reserved messages only from its hello (over TCP)
    /// hears its id as soon as that arrives.
    fn peer_understands_reserved(&self, sock: &Sock) {
        if let Some(id) = sock.relay_id() {
            announce(sock, id);
        }
    }

    fn request<'a>(
        &'a self,
        sock: &'a Sock,
        op: &'a str,
        payload: Bytes,
    ) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
        Box::pin(async move {
            if op == wire::WHOAMI {
                let me = sock.relay_id().map(|me| format!("\"{me}\"")).unwrap_or_default();
                return Answer::Result(Bytes::from(me));
            }
            match self.forward(sock, &payload).await {
                Ok(()) => Answer::Result(Bytes::new()),
                Err(NotSent::Fault(fault)) => Answer::Error(fault.to_string()),
                Err(NotSent::QueueFull) => Answer::Retry(wire::QUEUE_FULL.to_owned()),
            }
        })
    }

    /// Relays a fire-and-forget message; a failure is reported to the sender as a notice.
    fn notification<'a>(
        &'a self,
        sock: &'a Sock,
        _name: &'a str,
        payload: Bytes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let error = match self.forward(sock, &payload).await {
                Ok(()) => return,
                Err(NotSent::Fault(fault)) => fault.to_string(),
                Err(NotSent::QueueFull) => wire::QUEUE_FULL.to_owned(),
            };
            let notice = wire::encode_undelivered(&payload, &error);
            let notice =
                Frame::Notification { name: name(wire::UNDELIVERED), payload: notice.into() };
            let _ = sock.send(notice).await;
        })
    }

    /// Frees the connection's id, so nothing more is routed to it, and drops what its
    /// mailbox holds.
    fn detach(&self, sock: &Sock, _reason: &CloseReason) {
        if let Some(conn) = sock.state::<Conn>() {
            self.bus.unregister(conn.id);
            conn.mailbox.close();
        }
    }
}

impl Relay {
    /// Validates a message and queues it for its recipient.
    async fn forward(&self, sock: &Sock, payload: &[u8]) -> Result<(), NotSent> {
        let Some(from) = sock.relay_id() else {
            return Err(NotSent::Fault(Fault::UnknownPeer));
        };
        let send = wire::parse_send(payload, self.max_body).map_err(NotSent::Fault)?;
        if let Some(authorize) = &self.authorize {
            let mut allowed = false;
            crate::handlers::call_hook("relay authorize", || allowed = authorize(sock, send.to));
            if !allowed {
                return Err(NotSent::Fault(Fault::UnknownPeer));
            }
        }
        let delivery = Bytes::from(wire::encode_delivery(from, &send));
        self.bus.deliver(send.to, delivery).await.map_err(|e| match e {
            Undeliverable::QueueFull => NotSent::QueueFull,
            _ => NotSent::Fault(Fault::UnknownPeer),
        })
    }
}

/// Tells the peer its id with `$id`, ahead of anything queued to send.
fn announce(sock: &Sock, id: PeerId) {
    let payload = Bytes::from(format!("\"{id}\""));
    sock.send_now(Frame::Notification { name: name(wire::ID), payload });
}

/// Moves deliveries from the mailbox into the connection's send queue. One that cannot get in
/// within `stall` means the peer has stopped reading: it is disconnected, and its id freed.
/// It ends when the connection closes, since `detach` closes the mailbox.
async fn drain(sock: Sock, mailbox: Mailbox, stall: Duration) {
    while let Some(payload) = mailbox.next().await {
        let frame = Frame::Notification { name: name(wire::SEND), payload };
        match tokio::time::timeout(stall, sock.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_closed)) => break,
            Err(_) => {
                tracing::debug!(?stall, "relay recipient stalled");
                sock.close_with(CloseReason::RelayStalled(stall), None);
                break;
            }
        }
    }
    mailbox.close();
}
