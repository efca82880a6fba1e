//! The relay from a client's side: sending from a [`Sock`], and the [`Inbox`] that receives
//! messages by topic and learns the connection's id.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gotalk_protocol::relay::{self as wire, PeerId, Undelivered};
use gotalk_protocol::session::{self, Token};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::error::Error;
use crate::handlers::Handlers;
use crate::lock;
use crate::sock::Sock;

/// The envelope of a message to send, with the body as JSON text.
fn envelope<T: Serialize + ?Sized>(to: PeerId, topic: &str, body: &T) -> Result<Bytes, Error> {
    let body = serde_json::to_string(body)?;
    wire::encode_send(to, topic, &body)
        .map(Bytes::from)
        .map_err(|fault| Error::Remote(fault.to_string()))
}

impl Sock {
    /// Sends `body` (as JSON) to the peer `to` on `topic`, through the server's relay, and
    /// waits until it is queued for the recipient. A full queue is retried after the wait
    /// the server asks for, like any RetryResult.
    ///
    /// # Errors
    /// [`Error::Remote`] with the fault: `unknown peer` (also when the server refuses the
    /// pair), `bad header: …`, `too large: …`; [`Error::Retry`] when the recipient's queue
    /// stayed full; [`Error::Json`] for a body that does not encode; [`Error::Closed`].
    pub async fn relay<T: Serialize + ?Sized>(
        &self,
        to: PeerId,
        topic: &str,
        body: &T,
    ) -> Result<(), Error> {
        self.buffer_request(wire::SEND, envelope(to, topic, body)?).await.map(drop)
    }

    /// Sends `body` to `to` on `topic` without waiting for the relay's answer. When it cannot
    /// be delivered, the server sends a notice, which an [`Inbox`] passes to
    /// [`Inbox::undelivered`].
    ///
    /// # Errors
    /// As [`buffer_notify`](Sock::buffer_notify), and [`Error::Json`].
    pub async fn relay_notify<T: Serialize + ?Sized>(
        &self,
        to: PeerId,
        topic: &str,
        body: &T,
    ) -> Result<(), Error> {
        self.buffer_notify(wire::SEND, envelope(to, topic, body)?).await
    }

    /// Asks the server for this connection's relay id.
    ///
    /// # Errors
    /// [`Error::Remote`] from a server without the relay, [`Error::Json`], [`Error::Closed`].
    pub async fn whoami(&self) -> Result<PeerId, Error> {
        self.request(wire::WHOAMI, &()).await
    }
}

/// A relayed message as its recipient gets it.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// The sender's id, as the server knows it.
    pub from: PeerId,
    /// The conversation.
    pub topic: String,
    /// The body's JSON text.
    pub body: Bytes,
}

impl Message {
    /// The body, decoded from JSON.
    ///
    /// # Errors
    /// [`Error::Json`] when it is not a `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("from", &self.from)
            .field("topic", &self.topic)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

/// The receiving end of one topic, from [`Inbox::topic`].
pub type Topic = mpsc::Receiver<Message>;

type IdFn = Arc<dyn Fn(PeerId) + Send + Sync>;

/// What a client receives through the relay: its id, messages by topic, and notices of
/// messages it sent that were not delivered.
///
/// Install it in the client's handlers before connecting; it serves every connection made
/// with them, so after a reconnect [`on_id`](Inbox::on_id) reports the new id.
///
/// Each topic has its own queue of [`queue`](Inbox::queue) messages (default 1024), so a
/// topic nobody reads never holds up another: a message to a full or unread topic is dropped
/// and counted in [`dropped`](Inbox::dropped), with a warning in the log.
///
/// ```no_run
/// # async fn demo(addr: std::net::SocketAddr) -> Result<(), gotalk::Error> {
/// use std::sync::Arc;
/// use gotalk::relay::Inbox;
///
/// let inbox = Inbox::new();
/// inbox.on_id(|id| println!("my id is {id}"));
/// let mut chat = inbox.topic("chat");
/// let mut handlers = gotalk::Handlers::new();
/// inbox.install(&mut handlers);
/// let sock = gotalk::tcp::connect(addr, Arc::new(handlers), Default::default()).await?;
///
/// let me = inbox.id().await;
/// sock.relay(me, "chat", "hello, me").await?;
/// let message = chat.recv().await.expect("the inbox is open");
/// assert_eq!(message.from, me);
/// assert_eq!(message.json::<String>()?, "hello, me");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Inbox {
    inner: Arc<Inner>,
}

struct Inner {
    id: watch::Sender<Option<PeerId>>,
    session: watch::Sender<Option<Token>>,
    on_id: Mutex<Vec<IdFn>>,
    topics: Mutex<HashMap<String, mpsc::Sender<Message>>>,
    undelivered: Mutex<Option<mpsc::Sender<Undelivered>>>,
    queue: Mutex<usize>,
    dropped: AtomicU64,
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("id", &*self.inner.id.borrow())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox {
            inner: Arc::new(Inner {
                id: watch::channel(None).0,
                session: watch::channel(None).0,
                on_id: Mutex::new(Vec::new()),
                topics: Mutex::new(HashMap::new()),
                undelivered: Mutex::new(None),
                queue: Mutex::new(1024),
                dropped: AtomicU64::new(0),
            }),
        }
    }
}

impl Inbox {
    /// An inbox with no topics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the relay's notifications (`$id`, `$session`, `$relay`, `$undelivered`) in
    /// `handlers`.
    pub fn install(&self, handlers: &mut Handlers) -> &Self {
        let inbox = self.clone();
        handlers.handle_buffer_notification(session::SESSION, move |_sock, payload| {
            match Token::parse_json(&payload) {
                Some(token) => drop(inbox.inner.session.send_replace(Some(token))),
                None => tracing::warn!("relay: ignoring a malformed session token"),
            }
            std::future::ready(())
        });
        let inbox = self.clone();
        handlers.handle_buffer_notification(wire::ID, move |_sock, payload| {
            inbox.on_id_payload(&payload);
            std::future::ready(())
        });
        let inbox = self.clone();
        handlers.handle_buffer_notification(wire::SEND, move |_sock, payload| {
            inbox.on_message(&payload);
            std::future::ready(())
        });
        let inbox = self.clone();
        handlers.handle_buffer_notification(wire::UNDELIVERED, move |_sock, payload| {
            inbox.on_undelivered(&payload);
            std::future::ready(())
        });
        self
    }

    /// The messages per topic that may wait to be read. Default 1024; applies to topics
    /// opened after the call.
    pub fn queue(&self, messages: usize) -> &Self {
        *lock(&self.inner.queue) = messages.max(1);
        self
    }

    /// The messages on `topic`, from now on. Calling it again for the same topic replaces the
    /// receiver.
    pub fn topic(&self, topic: &str) -> Topic {
        let (tx, rx) = mpsc::channel(*lock(&self.inner.queue));
        lock(&self.inner.topics).insert(topic.to_owned(), tx);
        rx
    }

    /// Notices of fire-and-forget messages that were not delivered, from now on.
    pub fn undelivered(&self) -> mpsc::Receiver<Undelivered> {
        let (tx, rx) = mpsc::channel(*lock(&self.inner.queue));
        *lock(&self.inner.undelivered) = Some(tx);
        rx
    }

    /// Calls `f` with each id the server assigns: on every connection, so again after a
    /// reconnect. It runs on the connection's notification task and must not block.
    pub fn on_id(&self, f: impl Fn(PeerId) + Send + Sync + 'static) -> &Self {
        lock(&self.inner.on_id).push(Arc::new(f));
        self
    }

    /// The current id, waiting for the server to assign one.
    pub async fn id(&self) -> PeerId {
        let mut rx = self.inner.id.subscribe();
        loop {
            if let Some(id) = *rx.borrow_and_update() {
                return id;
            }
            // The sender lives in `self`, so it cannot be dropped while we wait.
            let _ = rx.changed().await;
        }
    }

    /// The id, changes included: a reconnect gets a new one.
    pub fn ids(&self) -> watch::Receiver<Option<PeerId>> {
        self.inner.id.subscribe()
    }

    /// The token of the connection's session, from a server that keeps sessions of peers
    /// that go away ([`Relay::resume_grace`](super::Relay::resume_grace)): after a
    /// reconnect, [`Sock::resume`] with it takes back the id, the groups and what was sent
    /// meanwhile. It stays the same across resumes.
    pub fn session(&self) -> Option<Token> {
        *self.inner.session.borrow()
    }

    /// The session's token, changes included, to wait for it.
    pub fn sessions(&self) -> watch::Receiver<Option<Token>> {
        self.inner.session.subscribe()
    }

    /// Messages dropped because their topic was not being read or its queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn on_id_payload(&self, payload: &[u8]) {
        let Ok(id) = serde_json::from_slice::<PeerId>(payload) else {
            tracing::warn!("relay: ignoring a malformed id");
            return;
        };
        self.inner.id.send_replace(Some(id));
        let hooks = lock(&self.inner.on_id).clone();
        for hook in hooks {
            crate::handlers::call_hook("on_id", || hook(id));
        }
    }

    fn on_message(&self, payload: &[u8]) {
        let message = match wire::parse_delivery(payload) {
            Ok(d) => Message {
                from: d.from,
                topic: d.topic.into_owned(),
                body: Bytes::copy_from_slice(d.body.get().as_bytes()),
            },
            Err(fault) => return tracing::warn!(%fault, "relay: ignoring a malformed delivery"),
        };
        let tx = lock(&self.inner.topics).get(&message.topic).cloned();
        let topic = message.topic.clone();
        let sent = match tx {
            Some(tx) => tx.try_send(message).is_ok(),
            None => false,
        };
        if !sent {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%topic, "relay: dropped a message for a topic that is not being read");
        }
    }

    fn on_undelivered(&self, payload: &[u8]) {
        let Ok(notice) = serde_json::from_slice::<Undelivered>(payload) else {
            return tracing::warn!("relay: ignoring a malformed notice");
        };
        let tx = lock(&self.inner.undelivered).clone();
        match tx {
            Some(tx) if tx.try_send(notice).is_ok() => {}
            _ => tracing::warn!("relay: a message was not delivered and nobody reads notices"),
        }
    }
}
