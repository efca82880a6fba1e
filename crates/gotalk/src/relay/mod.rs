//! The relay: every connection gets a random id, and peers send each other messages by id and
//! topic through the server, as signalling for WebRTC needs.
//!
//! Turn it on with [`Handlers::relay`](crate::Handlers::relay); it plugs into every
//! connection as an [`Extension`](crate::Extension), and since one registry serves every
//! transport, TCP, TLS and WebSocket peers all reach each other. Each connection gets a
//! random [`PeerId`] when it opens; a client of ours is told it first (the notification
//! `$id`), and any client can ask for it (the request `whoami`). A reconnect gets a new id.
//! The wire format is in [`gotalk_protocol::relay`].
//!
//! Messages are validated before they are forwarded, carry the sender's id as the server
//! knows it, and go into the recipient's [`Mailbox`], bounded in bytes. A sender never waits
//! on a recipient: a full mailbox answers "queue full" (a RetryResult) at once, and a
//! recipient that takes no message for [`Relay::stall_timeout`] is disconnected.
//!
//! Layout: `server` (the extension: ids, the reserved messages, draining mailboxes), `bus`
//! (the registry and delivery, behind the [`Bus`] trait so several gateway processes can
//! share one), `mailbox` (one recipient's queue), `client` (the Rust client's side: sending
//! from a [`Sock`] and the [`Inbox`] that receives).

mod bus;
mod client;
mod mailbox;
mod server;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use bus::{Bus, Delivering, LocalBus, Undeliverable};
pub use client::{Inbox, Message, Topic};
pub use gotalk_protocol::relay::{Fault, PeerId, Undelivered, DEFAULT_MAX_BODY, MAX_TOPIC_LEN};
pub use mailbox::{Mailbox, Refused};

use crate::handlers::Handlers;
use crate::sock::Sock;

type AuthorizeFn = Arc<dyn Fn(&Sock, PeerId) -> bool + Send + Sync>;

/// The relay's settings and its bus. Cheap to clone: clones share the bus, so a clone kept
/// by the application sees the same peers.
///
/// ```
/// use gotalk::relay::Relay;
///
/// let relay = Relay::new().max_body(16 * 1024).authorize(|sender, to| {
///     // Say, only peers that logged in may send; refusals look like unknown peers.
///     sender.info().request.is_some() && to != sender.relay_id().unwrap_or(to)
/// });
/// let mut handlers = gotalk::Handlers::new();
/// handlers.relay(relay);
/// ```
#[derive(Clone)]
#[must_use]
pub struct Relay {
    pub(crate) max_body: usize,
    pub(crate) queue_bytes: usize,
    pub(crate) stall_timeout: Duration,
    pub(crate) authorize: Option<AuthorizeFn>,
    pub(crate) bus: Arc<dyn Bus>,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("max_body", &self.max_body)
            .field("queue_bytes", &self.queue_bytes)
            .field("stall_timeout", &self.stall_timeout)
            .field("authorize", &self.authorize.is_some())
            .field("peers", &self.bus.local_peers())
            .finish()
    }
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            max_body: DEFAULT_MAX_BODY,
            queue_bytes: 1024 * 1024,
            stall_timeout: Duration::from_secs(10),
            authorize: None,
            bus: Arc::new(LocalBus::new()),
        }
    }
}

impl Relay {
    /// A relay for one process, with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// The largest body, in bytes of its JSON text. Default 64 KiB ([`DEFAULT_MAX_BODY`]).
    /// A larger one is refused with the fault `too large`.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The bytes of deliveries one recipient's queue may hold. Default 1 MiB. Past it,
    /// senders get a RetryResult `recipient's queue is full` (an ErrorResult for a peer that
    /// cannot take one). An empty queue takes any one message.
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// How long a recipient may take no message from its queue (its connection's send queue
    /// staying full) before it is disconnected with [`CloseReason::RelayStalled`]. Default
    /// 10 s.
    ///
    /// [`CloseReason::RelayStalled`]: crate::CloseReason::RelayStalled
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// Decides whether the connection `sender` may send to the peer `to`; by default anyone
    /// may send to anyone. A refusal gets the same `unknown peer` fault as an id nobody has,
    /// so it reveals nothing. Called on the sender's read loop: it must not block.
    pub fn authorize(mut self, f: impl Fn(&Sock, PeerId) -> bool + Send + Sync + 'static) -> Self {
        self.authorize = Some(Arc::new(f));
        self
    }

    /// The registry and delivery to use. Default: a [`LocalBus`], for one process.
    pub fn bus(mut self, bus: Arc<dyn Bus>) -> Self {
        self.bus = bus;
        self
    }

    /// How many connections of this process are registered, one per live connection.
    pub fn peers(&self) -> usize {
        self.bus.local_peers()
    }
}

impl Handlers {
    /// Turns the relay on for every connection these handlers serve, on every transport:
    /// each gets a random id (told with the notification `$id` to clients of ours, see
    /// [`Sock::peer_understands_reserved`]), and the reserved request `whoami` and request or
    /// notification `$relay` are answered by the relay before any handler of the same name.
    /// A second call replaces the relay. See [`crate::relay`].
    pub fn relay(&mut self, relay: Relay) -> &mut Self {
        self.extension(relay)
    }
}
