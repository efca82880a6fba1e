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
//! The application can put connections in [groups](Group) (rooms, topics) and publish to a
//! group or to everyone; each member's connection receives the notification through the same
//! bounded queue, and a member too far behind is disconnected. Who is in a group, with what
//! the application said about each member, is [`Relay::members`]; a group can keep its last
//! messages for newcomers ([`Note::keep`], [`Relay::history`]).
//!
//! Layout: `server` (the extension: ids, the reserved messages, draining mailboxes), `bus`
//! (the registry, groups and delivery, behind the [`Bus`] trait so several gateway processes
//! can share them), `group` (group names, messages and members), `mailbox` (one recipient's
//! queue), `client` (the Rust client's side: sending from a [`Sock`] and the [`Inbox`] that
//! receives).

mod bus;
mod client;
mod group;
mod mailbox;
mod resume;
mod server;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use bus::{
    push_note, undeliverable, Bus, BusState, Delivering, Fetching, LocalBus, Registering, Resuming,
    Roster, Undeliverable,
};
pub use client::{Inbox, Message, Topic};
pub use gotalk_protocol::relay::{Fault, PeerId, Undelivered, DEFAULT_MAX_BODY, MAX_TOPIC_LEN};
pub use gotalk_protocol::session::{Secret, Token};
pub use group::{BadGroup, Group, Member, Note, MAX_GROUP_LEN, MAX_KEEP, MAX_META};
pub use mailbox::{Mailbox, Message as Held, Refused};
pub use resume::Sessions;

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
    pub(crate) max_in_flight: usize,
    pub(crate) max_in_flight_bytes: usize,
    pub(crate) max_groups: usize,
    pub(crate) resume_grace: Duration,
    pub(crate) max_detached: usize,
    pub(crate) authorize: Option<AuthorizeFn>,
    pub(crate) bus: Arc<dyn Bus>,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("max_body", &self.max_body)
            .field("queue_bytes", &self.queue_bytes)
            .field("stall_timeout", &self.stall_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_in_flight_bytes", &self.max_in_flight_bytes)
            .field("max_groups", &self.max_groups)
            .field("resume_grace", &self.resume_grace)
            .field("max_detached", &self.max_detached)
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
            max_in_flight: 64,
            max_in_flight_bytes: 1024 * 1024,
            max_groups: 256,
            resume_grace: Duration::ZERO,
            max_detached: 10_000,
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

    /// How many messages one connection may have on their way to other instances of a
    /// cluster at once, their outcome still to come. Default 64. Past it, the sender gets a
    /// RetryResult `relay unavailable` at once: a slow bus costs each sender a bounded amount
    /// of memory, and never holds up its other messages. (With one process every delivery's
    /// outcome is known at once, so this never applies.)
    pub fn max_in_flight(mut self, count: usize) -> Self {
        self.max_in_flight = count;
        self
    }

    /// How many bytes of messages one connection may have on their way to other instances of
    /// a cluster at once, each counted as its recipient gets it (its body and topic, plus 66
    /// bytes). Default 1 MiB. Past it, as past [`max_in_flight`](Self::max_in_flight), the
    /// sender gets a RetryResult `relay unavailable` at once; one message always fits when
    /// the connection has nothing else on its way. Without it, one connection could hold
    /// `max_in_flight` messages of [`max_body`](Self::max_body) each of the bus's outbound
    /// bytes, shared by the whole instance.
    pub fn max_in_flight_bytes(mut self, bytes: usize) -> Self {
        self.max_in_flight_bytes = bytes;
        self
    }

    /// How many groups one connection may be in at once. Default 256. Past it,
    /// [`join`](Self::join) returns [`JoinError::TooManyGroups`]; joining a group the
    /// connection is in (to update its description) always works.
    pub fn max_groups(mut self, count: usize) -> Self {
        self.max_groups = count;
        self
    }

    /// How long the session of a peer that went away is kept for it: its id stays
    /// registered, it stays in its groups, and what is sent to it is held in its queue
    /// (within [`queue_bytes`](Self::queue_bytes)), until it reconnects and resumes the
    /// session with its token, or the time is up. Default zero: off.
    ///
    /// With it on, each peer of ours is told its session's token (the notification
    /// `$session`, right after `$id`) and takes the session back with the request `$resume`
    /// (see [`gotalk_protocol::session`], [`Sock::resume`]). A session is kept when the
    /// connection failed or stopped answering; not when the peer said `$done`, broke the
    /// protocol, fell behind its queue, or this side closed it. Kept messages are charged
    /// to the process's [memory budget](crate::Config::memory_budget); one that does not fit
    /// is refused as a full queue. A group message that does not fit ends the session.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let relay = gotalk::relay::Relay::new()
    ///     .resume_grace(Duration::from_secs(30))
    ///     .max_detached(1_000);
    /// ```
    pub fn resume_grace(mut self, grace: Duration) -> Self {
        self.resume_grace = grace;
        self
    }

    /// How many sessions of peers that went away this process keeps at once (see
    /// [`resume_grace`](Self::resume_grace)). Default 10,000. Past it, the id of a peer that
    /// goes away is freed at once, as with no grace.
    pub fn max_detached(mut self, count: usize) -> Self {
        self.max_detached = count;
        self
    }

    /// How many sessions of peers that went away are kept now (see
    /// [`resume_grace`](Self::resume_grace)).
    pub fn detached(&self) -> usize {
        self.bus.sessions().map_or(0, Sessions::held)
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

    /// Puts the connection `sock` in `group`, described to the other members by `meta` (JSON
    /// text the application chooses, at most [`MAX_META`] bytes, or empty); joining again
    /// updates the description. It leaves every group when it closes.
    ///
    /// # Errors
    /// [`JoinError::NoRelay`] for a connection the relay does not serve (one of another
    /// registry, or one already closed), [`JoinError::MetaTooLarge`] past [`MAX_META`],
    /// [`JoinError::TooManyGroups`] for a connection already in
    /// [`max_groups`](Self::max_groups) other groups.
    pub fn join(
        &self,
        sock: &Sock,
        group: &Group,
        meta: impl Into<Bytes>,
    ) -> Result<(), JoinError> {
        let meta = meta.into();
        if meta.len() > MAX_META {
            return Err(JoinError::MetaTooLarge(meta.len()));
        }
        self.enter(sock, group, meta)
    }

    /// Takes the connection `sock` out of `group`.
    pub fn leave(&self, sock: &Sock, group: &Group) {
        self.exit(sock, group);
    }

    /// Sends `note` to every member of `group`, on every instance, at most once.
    ///
    /// # Errors
    /// [`Undeliverable::Unavailable`] when the bus between instances could not take it:
    /// members on this instance have it anyway.
    pub fn publish(&self, group: &Group, note: Note) -> Result<(), Undeliverable> {
        self.bus.publish(group, note)
    }

    /// Sends `note` to every connection of every instance, as [`publish`](Self::publish).
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub fn broadcast(&self, note: Note) -> Result<(), Undeliverable> {
        self.bus.broadcast(note)
    }

    /// Who is in `group`, on every instance.
    pub fn members(&self, group: &Group) -> Vec<Member> {
        self.bus.members(group)
    }

    /// The groups that have members, with how many.
    pub fn groups(&self) -> Vec<(Group, usize)> {
        self.bus.groups()
    }

    /// The messages `group` keeps for newcomers, oldest first (see [`Note::keep`]).
    pub async fn history(&self, group: &Group) -> Vec<Note> {
        self.bus.history(group).await
    }

    /// The bus's state: up or down, and counters of changes to groups and of recoveries.
    ///
    /// Do not keep the guard that [`borrow`](tokio::sync::watch::Receiver::borrow) or
    /// [`wait_for`](tokio::sync::watch::Receiver::wait_for) return across an await: it holds
    /// the state's lock, and whatever reports a change (a member joining, the bus going down
    /// or coming back) blocks its thread until the guard is gone. Copy what you need and let
    /// it go, as in `let up = relay.state().borrow().up;` (see [`Bus::state`]).
    pub fn state(&self) -> tokio::sync::watch::Receiver<BusState> {
        self.bus.state()
    }

    /// The bus's figures for monitoring ([`Bus::figures`]).
    pub fn bus_figures(&self) -> Vec<(&'static str, u64)> {
        self.bus.figures()
    }

    /// Leaves the other instances of a cluster, at shutdown ([`Bus::leave_cluster`]).
    pub async fn leave_cluster(&self) {
        self.bus.leave_cluster().await;
    }
}

/// Why a connection could not join a group.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The relay does not serve this connection.
    #[error("the relay does not serve this connection")]
    NoRelay,
    /// The member's description is larger than [`MAX_META`].
    #[error("a member's description is {0} bytes, the limit is 1024")]
    MetaTooLarge(usize),
    /// The connection is in as many groups as [`Relay::max_groups`] allows (the limit).
    #[error("a connection may be in {0} groups at most")]
    TooManyGroups(usize),
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
