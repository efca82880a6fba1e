//! The relay on a server's connections, as an [`Extension`]: each connection's id and
//! mailbox from open to close, and the reserved `whoami` and `$relay` messages, answered on
//! the read loop (they only validate and queue, never wait on another peer).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use gotalk_protocol::relay::{self as wire, Fault, PeerId};
use gotalk_protocol::session::{self, Secret, Token};
use gotalk_protocol::{Frame, Name};

use super::bus::Delivering;
use super::mailbox::Next;
use super::{Group, JoinError, Mailbox, Member, Relay, Undeliverable};
use crate::error::CloseReason;
use crate::extension::{Answer, Extension, Later};
use crate::lock;
use crate::sock::Sock;

/// What the relay keeps with each connection.
pub(super) struct Conn {
    /// The session it serves: the one it was given, or one it resumed.
    pub(super) now: Mutex<Attached>,
    /// A `$resume` is under way.
    pub(super) resuming: AtomicBool,
    /// Deliveries handed to the bus whose outcome is still to come.
    in_flight: Arc<Pending>,
    /// The groups the connection is in, at most [`Relay::max_groups`]: few, so a list.
    pub(super) groups: Mutex<Vec<Group>>,
    /// Every instance can reach the id.
    pub(super) reachable: AtomicBool,
    /// `$id` went out.
    pub(super) announced: AtomicBool,
}

/// The session a connection serves.
#[derive(Clone)]
pub(super) struct Attached {
    pub(super) id: PeerId,
    /// Its token's secret, when sessions are kept for peers that go away.
    pub(super) secret: Option<Secret>,
    pub(super) mailbox: Mailbox,
    /// The connection has closed, and the session was held or freed.
    pub(super) detached: bool,
}

impl Conn {
    fn id(&self) -> PeerId {
        lock(&self.now).id
    }
}

/// Why a message was not relayed.
enum NotSent {
    Fault(Fault),
    /// Went nowhere; the text of the RetryResult.
    Retry(&'static str),
    /// Handed over with no answer: the text of the ErrorResult.
    Error(&'static str),
}

impl From<Undeliverable> for NotSent {
    fn from(undeliverable: Undeliverable) -> Self {
        match undeliverable {
            Undeliverable::UnknownPeer => NotSent::Fault(Fault::UnknownPeer),
            Undeliverable::QueueFull => NotSent::Retry(wire::QUEUE_FULL),
            Undeliverable::Unavailable => NotSent::Retry(wire::UNAVAILABLE),
            Undeliverable::Timeout => NotSent::Error(wire::TIMEOUT),
        }
    }
}

impl NotSent {
    fn answer(self) -> Answer {
        match self {
            NotSent::Fault(fault) => Answer::Error(fault.to_string()),
            NotSent::Retry(text) => Answer::Retry(text.to_owned()),
            NotSent::Error(text) => Answer::Error(text.to_owned()),
        }
    }

    fn text(self) -> String {
        match self {
            NotSent::Fault(fault) => fault.to_string(),
            NotSent::Retry(text) | NotSent::Error(text) => text.to_owned(),
        }
    }
}

/// A relay's outcome: known now (one process, or a refusal), or to come from the bus.
enum Forwarded {
    Now(Result<(), NotSent>),
    Later(Pin<Box<dyn Future<Output = Result<(), NotSent>> + Send>>),
}

fn name(name: &'static str) -> Name {
    Name::new(name).expect("a reserved name is short")
}

impl Sock {
    /// The id the relay gave this connection, on a server with the relay on.
    pub fn relay_id(&self) -> Option<PeerId> {
        self.state::<Conn>().map(Conn::id)
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

impl CloseReason {
    /// The reason a group member is disconnected with when a message published to one of its
    /// groups did not fit in its queue: `relay recipient fell behind its groups`.
    #[allow(non_snake_case)]
    pub fn GroupOverflow() -> CloseReason {
        CloseReason::Extension {
            name: "relay",
            detail: "relay recipient fell behind its groups".to_owned(),
            timeout: false,
        }
    }
}

impl Extension for Relay {
    fn requests(&self) -> &'static [&'static str] {
        &[wire::WHOAMI, wire::SEND, session::RESUME]
    }

    fn notifications(&self) -> &'static [&'static str] {
        &[wire::SEND]
    }

    /// Gives a new connection its id: registered, told to a peer that understands the
    /// reserved messages, and its mailbox drained into the connection by a task of its own.
    fn attach(&self, sock: &Sock) {
        let id = PeerId::from_random(rand::random());
        let mailbox = Mailbox::charged(self.queue_bytes, Some(sock.conn_budget().clone()));
        let sessions = self.bus.sessions().filter(|_| !self.resume_grace.is_zero());
        let secret = sessions.map(|_| Secret::from_random(rand::random()));
        let conn = Conn {
            now: Mutex::new(Attached { id, secret, mailbox: mailbox.clone(), detached: false }),
            resuming: AtomicBool::new(false),
            in_flight: Arc::default(),
            groups: Mutex::default(),
            reachable: AtomicBool::new(false),
            announced: AtomicBool::new(false),
        };
        if sock.set_state(conn).is_err() {
            return;
        }
        if let (Some(sessions), Some(secret)) = (sessions, secret) {
            sessions.live(id, secret, sock.clone());
        }
        let mut registering = self.bus.register(id, mailbox.clone());
        if sock.is_closed() {
            // Closed meanwhile: `detach` may have run before the id was registered.
            if let Some(sessions) = sessions {
                sessions.forget_live(id, sock);
            }
            self.bus.unregister(id);
            mailbox.close();
            return;
        }
        tracing::debug!(parent: sock.span(), %id, "relay id");
        self.drain_on_first(sock, &mailbox);
        if poll_now(&mut registering).is_some() {
            // Sent before the read loop and the on_connect hook run, so it is the first
            // message after the hello.
            reachable(sock);
        } else {
            // A bus between instances: the id is told once every instance can reach it, so
            // no peer hears of an id that others would get "unknown peer" for. Not
            // instrumented, as no task of a connection is (see `Shared::span` in `sock`).
            let sock = sock.clone();
            tokio::spawn(async move {
                registering.await;
                reachable(&sock);
            });
        }
    }

    /// A peer learned to understand the reserved messages only from its hello (over TCP)
    /// hears its id as soon as that arrives, if the id is reachable by then.
    fn peer_understands_reserved(&self, sock: &Sock) {
        if let Some(conn) = sock.state::<Conn>() {
            if conn.reachable.load(Ordering::Acquire) {
                announce(sock, conn);
            }
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
            if op == session::RESUME {
                return self.resume(sock, &payload);
            }
            match self.forward(sock, &payload) {
                Forwarded::Now(Ok(())) => Answer::Result(Bytes::new()),
                Forwarded::Now(Err(not_sent)) => not_sent.answer(),
                Forwarded::Later(outcome) => Answer::Later(Later::new(async move {
                    match outcome.await {
                        Ok(()) => Answer::Result(Bytes::new()),
                        Err(not_sent) => not_sent.answer(),
                    }
                })),
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
            match self.forward(sock, &payload) {
                Forwarded::Now(Ok(())) => {}
                Forwarded::Now(Err(not_sent)) => undelivered(sock, &payload, not_sent).await,
                Forwarded::Later(outcome) => {
                    let sock = sock.clone();
                    tokio::spawn(async move {
                        if let Err(not_sent) = outcome.await {
                            undelivered(&sock, &payload, not_sent).await;
                        }
                    });
                }
            }
        })
    }

    /// Frees the connection's id, so nothing more is routed to it, and drops what its
    /// mailbox holds; or, for a peer that may come back, holds its session.
    fn detach(&self, sock: &Sock, reason: &CloseReason) {
        if let Some(conn) = sock.state::<Conn>() {
            let mut now = lock(&conn.now);
            now.detached = true;
            self.release(sock, &now, reason);
        }
    }
}

impl Relay {
    /// Has `mailbox` drained into `sock` by a task of its own, started by the first thing it
    /// holds: most connections are never sent anything. That may come from a thread outside
    /// the runtime (a group the application publishes to), hence the handle.
    pub(super) fn drain_on_first(&self, sock: &Sock, mailbox: &Mailbox) {
        let (runtime, sock, stall) =
            (tokio::runtime::Handle::current(), sock.clone(), self.stall_timeout);
        let closed = sock.clone();
        mailbox.start_on_first(move |mailbox| {
            runtime.spawn(drain(sock, mailbox, stall));
        });
        if closed.is_closed() {
            // Closed meanwhile: its release may have run already, and a start left behind
            // would keep the connection alive for as long as a kept session's mailbox.
            mailbox.forget_start();
        }
    }

    /// Validates a message and hands it to the bus for its recipient, without waiting on the
    /// bus: messages of one sender go out in the order they came.
    fn forward(&self, sock: &Sock, payload: &[u8]) -> Forwarded {
        let Some(conn) = sock.state::<Conn>() else {
            return Forwarded::Now(Err(NotSent::Fault(Fault::UnknownPeer)));
        };
        let send = match wire::parse_send(payload, self.max_body) {
            Ok(send) => send,
            Err(fault) => return Forwarded::Now(Err(NotSent::Fault(fault))),
        };
        if let Some(authorize) = &self.authorize {
            let mut allowed = false;
            crate::handlers::call_hook("relay authorize", || allowed = authorize(sock, send.to));
            if !allowed {
                return Forwarded::Now(Err(NotSent::Fault(Fault::UnknownPeer)));
            }
        }
        let delivery = Bytes::from(wire::encode_delivery(conn.id(), &send));
        // Counted before it is handed over, so a sender cannot have more than the limits on
        // their way however fast it sends.
        let limits = (self.max_in_flight, self.max_in_flight_bytes);
        let Some(slot) = InFlight::take(&conn.in_flight, limits, delivery.len()) else {
            return Forwarded::Now(Err(Undeliverable::Unavailable.into()));
        };
        let mut delivering: Delivering = self.bus.deliver(send.to, delivery);
        match poll_now(&mut delivering) {
            Some(outcome) => Forwarded::Now(outcome.map_err(NotSent::from)),
            None => Forwarded::Later(Box::pin(async move {
                let outcome = delivering.await;
                drop(slot);
                outcome.map_err(NotSent::from)
            })),
        }
    }
}

/// What one connection has on its way: deliveries, and their bytes.
#[derive(Default)]
struct Pending {
    count: AtomicUsize,
    bytes: AtomicUsize,
}

/// One delivery on its way, counted against the sender's [`Relay::max_in_flight`] and
/// [`Relay::max_in_flight_bytes`] until it is dropped.
struct InFlight {
    pending: Arc<Pending>,
    bytes: usize,
}

impl InFlight {
    fn take(
        pending: &Arc<Pending>,
        (max, max_bytes): (usize, usize),
        bytes: usize,
    ) -> Option<Self> {
        pending
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()?;
        // Made now, so the count is given back should the bytes not fit.
        let mut slot = InFlight { pending: pending.clone(), bytes: 0 };
        pending
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                // One message always fits when nothing else is on its way, however large.
                (n == 0 || n.saturating_add(bytes) <= max_bytes).then_some(n + bytes)
            })
            .ok()?;
        slot.bytes = bytes;
        Some(slot)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.pending.count.fetch_sub(1, Ordering::AcqRel);
        self.pending.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Relay {
    /// Puts the connection in `group` unless that would make more than
    /// [`max_groups`](Relay::max_groups); joining a group it is in updates its description.
    pub(super) fn enter(&self, sock: &Sock, group: &Group, meta: Bytes) -> Result<(), JoinError> {
        let conn = sock.state::<Conn>().filter(|_| !sock.is_closed()).ok_or(JoinError::NoRelay)?;
        // Held while the bus is told, so joins and leaves of one connection reach it in the
        // order its list changed.
        let mut groups = conn.groups.lock().unwrap_or_else(|p| p.into_inner());
        if !groups.contains(group) {
            if groups.len() >= self.max_groups {
                return Err(JoinError::TooManyGroups(self.max_groups));
            }
            groups.push(group.clone());
        }
        self.bus.join(group, Member { peer: conn.id(), meta });
        Ok(())
    }

    /// Takes the connection out of `group`.
    pub(super) fn exit(&self, sock: &Sock, group: &Group) {
        if let Some(conn) = sock.state::<Conn>() {
            let mut groups = conn.groups.lock().unwrap_or_else(|p| p.into_inner());
            groups.retain(|g| g != group);
            self.bus.leave(group, conn.id());
        }
    }
}

/// Tells the sender of a fire-and-forget message that it was not delivered.
async fn undelivered(sock: &Sock, payload: &[u8], not_sent: NotSent) {
    let notice = wire::encode_undelivered(payload, &not_sent.text());
    let notice = Frame::Notification { name: name(wire::UNDELIVERED), payload: notice.into() };
    let _ = sock.send(notice).await;
}

/// The connection's id is reachable from everywhere: a peer that understands the reserved
/// messages is told it.
fn reachable(sock: &Sock) {
    if let Some(conn) = sock.state::<Conn>() {
        conn.reachable.store(true, Ordering::Release);
        if sock.peer_understands_reserved() {
            announce(sock, conn);
        }
    }
}

/// Tells the peer its id with `$id`, ahead of anything queued to send; once, though both the
/// registration and the peer's hello may ask.
pub(super) fn announce(sock: &Sock, conn: &Conn) {
    if conn.announced.swap(true, Ordering::AcqRel) {
        return;
    }
    let (id, secret) = {
        let now = lock(&conn.now);
        (now.id, now.secret)
    };
    let payload = Bytes::from(format!("\"{id}\""));
    sock.send_now(Frame::Notification { name: name(wire::ID), payload });
    if let Some(secret) = secret {
        let payload = Bytes::from(Token { id, secret }.to_json());
        sock.send_now(Frame::Notification { name: name(session::SESSION), payload });
    }
}

/// The future's output if it is ready without waiting.
fn poll_now<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    match Pin::new(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// Moves deliveries from the mailbox into the connection's send queue. One that cannot get in
/// within `stall` means the peer has stopped reading: it is disconnected, and its id freed.
/// It ends when the connection closes or its session moves to another mailbox; one it could
/// not send goes back to the mailbox, for the connection that resumes the session.
pub(super) async fn drain(sock: Sock, mailbox: Mailbox, stall: Duration) {
    let _reader = mailbox.reader().await;
    loop {
        let next = tokio::select! {
            next = mailbox.next() => next,
            _ = sock.closed() => None,
        };
        let Some(next) = next else { break };
        let frame = match next.clone() {
            Next::Relay(payload) => Frame::Notification { name: name(wire::SEND), payload },
            Next::Note(name, payload) => Frame::Notification { name, payload },
            Next::Overflowed => {
                tracing::debug!(parent: sock.span(), "relay recipient fell behind its groups");
                sock.close_with(CloseReason::GroupOverflow(), None);
                break;
            }
        };
        let sent = tokio::select! {
            sent = tokio::time::timeout(stall, sock.send(frame)) => sent,
            () = mailbox.overflowed() => {
                tracing::debug!(parent: sock.span(), "relay recipient fell behind its groups");
                sock.close_with(CloseReason::GroupOverflow(), None);
                break;
            }
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_closed)) => {
                mailbox.put_back(next);
                break;
            }
            Err(_) => {
                tracing::debug!(parent: sock.span(), ?stall, "relay recipient stalled");
                sock.close_with(CloseReason::RelayStalled(stall), None);
                break;
            }
        }
    }
}
