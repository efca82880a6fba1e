//! The link over NATS (core NATS: subjects and request/reply, no JetStream), with the
//! maintained `async-nats` client.
//!
//! The client is told not to reconnect, so nothing waits in it for a server that has gone:
//! a session fails as soon as its connection drops, every call on it fails from then on, and
//! the cluster's supervisor opens a new one. `async-nats` cannot be set to zero reconnects
//! (its `max_reconnects(0)` means "forever"), so the session notes the loss of its connection
//! in the client's reconnect-delay hook, which runs before any attempt, and the attempts are
//! capped at one per server; a connection the client might make that way is never used and
//! goes when the session is dropped.
//!
//! Request inboxes live under `<prefix>.inbox`, so a NATS user allowed only `<prefix>.>`
//! can do everything the cluster needs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::task::Poll;

use async_nats::client::{PublishError, PublishErrorKind, SubscribeErrorKind};
use async_nats::connection::State;
use async_nats::{
    Client, ConnectOptions, Event, Message, ServerAddr, ServerError, StatusCode, Subject,
    Subscriber,
};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::task::JoinHandle;

use crate::link::{Incoming, Link, LinkError, LinkFuture, Reply, RequestError, Session};

/// How a session proves itself to the server.
#[derive(Clone, Default)]
enum Credentials {
    #[default]
    None,
    UserPassword(String, String),
    Token(String),
}

/// A way to reach a NATS server (or several, tried in turn when a session opens).
///
/// ```no_run
/// # use gotalk_cluster::nats::NatsLink;
/// let link = NatsLink::new("nats://gotalk:secret@127.0.0.1:4222")?
///     .call_timeout(std::time::Duration::from_millis(250));
/// # Ok::<(), gotalk_cluster::LinkError>(())
/// ```
#[derive(Clone)]
pub struct NatsLink {
    servers: Vec<ServerAddr>,
    credentials: Credentials,
    prefix: String,
    name: Option<String>,
    connect_timeout: Duration,
    call_timeout: Duration,
    queue: usize,
}

impl std::fmt::Debug for NatsLink {
    // Without the credentials, which URLs carry.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let servers: Vec<_> =
            self.servers.iter().map(|s| format!("{}:{}", s.host(), s.port())).collect();
        f.debug_struct("NatsLink")
            .field("servers", &servers)
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("call_timeout", &self.call_timeout)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl NatsLink {
    /// The channel prefix unless [`prefix`](Self::prefix) sets another.
    pub const DEFAULT_PREFIX: &'static str = "gotalk";
    /// How long opening a session may take, unless [`connect_timeout`](Self::connect_timeout)
    /// sets another.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// The deadline of a publish, reply, subscribe or unsubscribe, unless
    /// [`call_timeout`](Self::call_timeout) sets another.
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(500);
    /// How many messages the client may hold before writing them, unless
    /// [`queue`](Self::queue) sets another.
    pub const DEFAULT_QUEUE: usize = 8192;

    /// A link to the servers of `urls`: one URL or several separated by commas,
    /// `nats://host:port` (`tls://` for TLS; port 4222 when left out). Credentials in the
    /// first URL that has some are used: `nats://user:password@host` or `nats://token@host`.
    pub fn new(urls: &str) -> Result<NatsLink, LinkError> {
        let mut servers = Vec::new();
        let mut credentials = Credentials::None;
        for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let server: ServerAddr = url
                .parse()
                .map_err(|e| LinkError(format!("nats: server address {:?}: {e}", redact(url))))?;
            if matches!(credentials, Credentials::None) {
                credentials = match (server.username(), server.password()) {
                    (Some(user), Some(password)) => {
                        Credentials::UserPassword(decode(user), decode(password))
                    }
                    (Some(token), None) => Credentials::Token(decode(token)),
                    _ => Credentials::None,
                };
            }
            servers.push(server);
        }
        if servers.is_empty() {
            return Err(LinkError("nats: no server address".into()));
        }
        Ok(NatsLink {
            servers,
            credentials,
            prefix: NatsLink::DEFAULT_PREFIX.into(),
            name: None,
            connect_timeout: NatsLink::DEFAULT_CONNECT_TIMEOUT,
            call_timeout: NatsLink::DEFAULT_CALL_TIMEOUT,
            queue: NatsLink::DEFAULT_QUEUE,
        })
    }

    /// The channel prefix: request inboxes are made under `<prefix>.inbox`, so a user
    /// allowed `<prefix>.>` needs no other permission. Default `gotalk`. A
    /// [`ClusterBus`](crate::ClusterBus) sets it to its own prefix when it starts; this is for
    /// a link used alone.
    pub fn prefix(mut self, prefix: impl Into<String>) -> NatsLink {
        self.prefix = prefix.into();
        self
    }

    /// Logs in with this user and password (instead of any in the URL).
    pub fn user_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> NatsLink {
        self.credentials = Credentials::UserPassword(user.into(), password.into());
        self
    }

    /// Logs in with this token (instead of any in the URL).
    pub fn token(mut self, token: impl Into<String>) -> NatsLink {
        self.credentials = Credentials::Token(token.into());
        self
    }

    /// The connection's name in the server's monitoring (`/connz`), e.g. the instance id.
    pub fn name(mut self, name: impl Into<String>) -> NatsLink {
        self.name = Some(name.into());
        self
    }

    /// How long opening a session may take, log-in included.
    pub fn connect_timeout(mut self, timeout: Duration) -> NatsLink {
        self.connect_timeout = timeout;
        self
    }

    /// The deadline of a publish, reply, subscribe (its confirmation included) and
    /// unsubscribe; a call that misses it fails the session. Requests have their own timeout.
    pub fn call_timeout(mut self, timeout: Duration) -> NatsLink {
        self.call_timeout = timeout;
        self
    }

    /// How many messages (publishes, requests, replies, subscriptions) the client may hold
    /// before writing them to the socket. A call that finds it full fails the session rather
    /// than wait: the connection is not keeping up, and a call that waited could be overtaken.
    pub fn queue(mut self, messages: usize) -> NatsLink {
        self.queue = messages.max(1);
        self
    }

    async fn open(&self, incoming: mpsc::Sender<Incoming>) -> Result<Box<dyn Session>, LinkError> {
        if !valid_prefix(&self.prefix) {
            return Err(LinkError(format!(
                "nats: prefix {:?} is not a subject of plain tokens",
                self.prefix
            )));
        }
        let shared = Arc::new(Shared::new());
        let inboxes = format!("{}.inbox", self.prefix);
        let mut options = ConnectOptions::new()
            // One try per server, for the first connection; see the module's comment.
            .max_reconnects(self.servers.len())
            .reconnect_delay_callback({
                let shared = shared.clone();
                move |_| {
                    if shared.connected.load(Ordering::Acquire) {
                        shared.fail("connection lost");
                    }
                    Duration::ZERO
                }
            })
            .event_callback({
                let shared = shared.clone();
                move |event| {
                    shared.on_event(event);
                    std::future::ready(())
                }
            })
            .connection_timeout(self.connect_timeout)
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .client_capacity(self.queue)
            .custom_inbox_prefix(&inboxes);
        options = match &self.credentials {
            Credentials::None => options,
            Credentials::UserPassword(user, password) => {
                options.user_and_password(user.clone(), password.clone())
            }
            Credentials::Token(token) => options.token(token.clone()),
        };
        if let Some(name) = &self.name {
            options = options.name(name);
        }
        let client =
            tokio::time::timeout(self.connect_timeout, options.connect(self.servers.clone()))
                .await
                .map_err(|_| {
                    LinkError(format!("nats: not connected within {:?}", self.connect_timeout))
                })?
                .map_err(|e| LinkError(format!("nats: {e}")))?;
        shared.connected.store(true, Ordering::Release);
        // A loss between the connection and the line above went unnoticed by the hook.
        if client.connection_state() != State::Connected {
            return Err(shared.fail("connection lost while opening"));
        }
        let inbox = client.new_inbox();
        let answers =
            tokio::time::timeout(self.call_timeout, client.subscribe(format!("{inbox}.*")))
                .await
                .map_err(|_| shared.fail("no room in the client's queue"))?
                .map_err(|e| LinkError(format!("nats: inbox: {e}")))?;
        let waiting = Arc::new(Waiting::default());
        let session = NatsSession {
            router: tokio::spawn(route(answers, waiting.clone(), shared.clone())),
            client,
            shared,
            incoming,
            subscriptions: Mutex::new(HashMap::new()),
            call_timeout: self.call_timeout,
            // Nobody subscribes to it (answers go to `<inboxes>.<id>.<n>`): the server answers
            // "no responders" once it has read everything sent before.
            sync_subject: format!("{inboxes}.sync"),
            inbox,
            waiting,
            next_token: AtomicU64::new(0),
        };
        // The inbox is subscribed (and the user may use it) before the session is handed out.
        session.sync().await?;
        Ok(Box::new(session))
    }
}

impl Link for NatsLink {
    fn connect(
        &self,
        incoming: mpsc::Sender<Incoming>,
    ) -> LinkFuture<'_, Result<Box<dyn Session>, LinkError>> {
        Box::pin(self.open(incoming))
    }

    fn channel(&self, parts: &[&str]) -> String {
        parts.join(".")
    }

    fn kind(&self) -> &'static str {
        "nats"
    }

    fn set_prefix(&mut self, prefix: &str) {
        prefix.clone_into(&mut self.prefix);
    }
}

/// The client's queue per subscription, between its reader and the session's forwarder,
/// which empties it at once into the cluster's bounded queue.
const SUBSCRIPTION_CAPACITY: usize = 1024;

/// What the client's hooks and the session share.
struct Shared {
    /// Set once the first connection is made: a reconnect attempt after it is a loss.
    connected: AtomicBool,
    /// True once the session has failed; never goes back.
    failed: watch::Sender<bool>,
    dropped: AtomicU64,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            connected: AtomicBool::new(false),
            failed: watch::Sender::new(false),
            dropped: AtomicU64::new(0),
        }
    }

    /// Marks the session failed, and says why the first time.
    fn fail(&self, why: &str) -> LinkError {
        if !self.failed.send_replace(true) {
            tracing::warn!(reason = why, "nats session failed");
        }
        LinkError(format!("nats: {why}"))
    }

    fn is_failed(&self) -> bool {
        *self.failed.borrow()
    }

    fn on_event(&self, event: Event) {
        match event {
            Event::Disconnected => {
                self.fail("connection lost");
            }
            Event::Closed => {
                self.fail("connection closed");
            }
            // The client's own queue for one subscription overflowed: one message lost.
            Event::SlowConsumer(_) | Event::ServerError(ServerError::SlowConsumer(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // Permission violations among them: the server refuses the one operation and
            // keeps the connection, so the deployment's configuration shows here.
            Event::ServerError(error) => tracing::warn!(%error, "nats server error"),
            Event::ClientError(error) => tracing::debug!(%error, "nats client error"),
            Event::Connected | Event::LameDuckMode | Event::Draining => {}
        }
    }
}

struct NatsSession {
    client: Client,
    shared: Arc<Shared>,
    incoming: mpsc::Sender<Incoming>,
    /// The forwarder of each subscribed channel. A tokio mutex: subscribe holds it while it
    /// sends, so two calls cannot subscribe one channel twice.
    subscriptions: Mutex<HashMap<String, JoinHandle<()>>>,
    call_timeout: Duration,
    /// This session's requests are answered on `<inbox>.<token>`.
    inbox: String,
    /// Requests waiting for their answer, by token.
    waiting: Arc<Waiting>,
    next_token: AtomicU64,
    /// Hands answers to their requests.
    router: JoinHandle<()>,
    sync_subject: String,
}

type Waiting = std::sync::Mutex<HashMap<u64, oneshot::Sender<Message>>>;

/// Takes a request's entry out of [`NatsSession::waiting`] however the request ends.
struct Forget<'a> {
    waiting: &'a Waiting,
    token: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.waiting).remove(&self.token);
    }
}

fn lock(waiting: &Waiting) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Message>>> {
    // Nothing panics while holding it; a poisoned map is still a consistent map.
    waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl NatsSession {
    /// Fails at once, without touching the client, when the session cannot be used: the
    /// client would otherwise queue the call until it reconnects.
    fn usable(&self) -> Result<(), LinkError> {
        if self.shared.is_failed() {
            return Err(LinkError("nats: session failed".into()));
        }
        if self.client.connection_state() != State::Connected {
            return Err(self.shared.fail("not connected"));
        }
        Ok(())
    }

    /// Hands a message to the client in this very poll, so calls polled one after another
    /// go out in that order. The client takes it at once when its queue has room (the
    /// cooperative budget is lifted for it); a full queue means the connection does not keep
    /// up, and waiting for room would let later calls overtake, so the session fails.
    async fn hand_over(
        &self,
        handing: impl Future<Output = Result<(), PublishError>>,
    ) -> Result<(), LinkError> {
        let mut handing = std::pin::pin!(tokio::task::unconstrained(handing));
        match std::future::poll_fn(|cx| Poll::Ready(handing.as_mut().poll(cx))).await {
            Poll::Ready(Ok(())) => Ok(()),
            Poll::Ready(Err(e)) if e.kind() == PublishErrorKind::Send => {
                Err(self.shared.fail("client gone"))
            }
            // Too large or a bad subject: this message's fault, not the session's.
            Poll::Ready(Err(e)) => Err(LinkError(format!("nats: {e}"))),
            Poll::Pending => Err(self.shared.fail("the client's queue is full")),
        }
    }

    async fn send(&self, subject: Subject, payload: Bytes) -> Result<(), LinkError> {
        self.usable()?;
        self.hand_over(self.client.publish(subject, payload)).await
    }

    async fn ask(
        &self,
        channel: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RequestError> {
        self.usable()?;
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        lock(&self.waiting).insert(token, answer);
        let _forget = Forget { waiting: &self.waiting, token };
        let reply = format!("{}.{token}", self.inbox);
        self.hand_over(self.client.publish_with_reply(channel.to_owned(), reply, payload)).await?;
        let mut failed = self.shared.failed.subscribe();
        tokio::select! {
            biased;
            answer = tokio::time::timeout(timeout, answered) => match answer {
                Err(_) => Err(RequestError::Timeout),
                Ok(Err(_)) => Err(RequestError::Link(LinkError("nats: connection lost".into()))),
                // The server's own answer when nobody subscribes (the client asked for it).
                Ok(Ok(message)) if message.status == Some(StatusCode::NO_RESPONDERS) => {
                    Err(RequestError::NoSubscriber)
                }
                Ok(Ok(message)) => Ok(message.payload),
            },
            // The answer cannot come any more: say so now rather than at the timeout.
            _ = failed.wait_for(|failed| *failed) => {
                Err(RequestError::Link(LinkError("nats: connection lost".into())))
            }
        }
    }

    async fn add(&self, channels: &[String]) -> Result<(), LinkError> {
        self.usable()?;
        let mut subscriptions = self.subscriptions.lock().await;
        for channel in channels {
            if subscriptions.contains_key(channel) {
                continue;
            }
            let subscriber = self.client.subscribe(channel.clone()).await.map_err(|e| {
                if e.kind() == SubscribeErrorKind::InvalidSubject {
                    LinkError(format!("nats: {e}"))
                } else {
                    self.shared.fail("client gone")
                }
            })?;
            let forwarder =
                tokio::spawn(forward(subscriber, self.incoming.clone(), self.shared.clone()));
            subscriptions.insert(channel.clone(), forwarder);
        }
        drop(subscriptions);
        self.sync().await
    }

    /// Waits until the server has read everything this session sent before: a request
    /// nobody subscribes to comes back "no responders" only after that.
    async fn sync(&self) -> Result<(), LinkError> {
        match self.ask(&self.sync_subject, Bytes::new(), self.call_timeout).await {
            Ok(_) | Err(RequestError::NoSubscriber) => Ok(()),
            Err(RequestError::Timeout) => Err(self.shared.fail(&format!(
                "no answer from the server on {}.* within {:?} (is the user allowed it?)",
                self.inbox, self.call_timeout
            ))),
            Err(RequestError::Link(e)) => Err(e),
        }
    }

    async fn remove(&self, channels: &[String]) -> Result<(), LinkError> {
        let mut subscriptions = self.subscriptions.lock().await;
        let mut stopped = Vec::new();
        for channel in channels {
            // The forwarder's subscriber unsubscribes as it is dropped; nothing more comes
            // in from the moment it is aborted.
            if let Some(forwarder) = subscriptions.remove(channel) {
                forwarder.abort();
                stopped.push(forwarder);
            }
        }
        drop(subscriptions);
        // Done once the server has the unsubscriptions, as a subscription is done once it
        // has that: each aborted task has dropped its subscriber (which hands the client its
        // UNSUB) when its handle returns, and the round trip after them comes back only once
        // the server has read them.
        for forwarder in stopped {
            let _ = forwarder.await;
        }
        self.usable()?;
        self.sync().await
    }
}

/// Hands a subscription's messages to the cluster's queue without ever waiting on it: a
/// full queue drops the message and counts it. Ends when the session fails.
async fn forward(
    mut subscriber: Subscriber,
    incoming: mpsc::Sender<Incoming>,
    shared: Arc<Shared>,
) {
    let mut failed = shared.failed.subscribe();
    loop {
        let message = tokio::select! {
            message = subscriber.next() => message,
            _ = failed.wait_for(|failed| *failed) => None,
        };
        let Some(message) = message else { return };
        let incoming_message = Incoming {
            channel: message.subject.into_string(),
            payload: message.payload,
            reply: message.reply.map(|reply| Reply(Bytes::from(reply.into_string()))),
        };
        match incoming.try_send(incoming_message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// Hands each answer on the session's inbox to the request waiting for it; an answer
/// nobody waits for any more (timed out) is dropped.
async fn route(mut inbox: Subscriber, waiting: Arc<Waiting>, shared: Arc<Shared>) {
    let mut failed = shared.failed.subscribe();
    loop {
        let message = tokio::select! {
            message = inbox.next() => message,
            _ = failed.wait_for(|failed| *failed) => None,
        };
        let Some(message) = message else { return };
        let token = message.subject.rsplit('.').next().and_then(|t| t.parse::<u64>().ok());
        if let Some(answer) = token.and_then(|token| lock(&waiting).remove(&token)) {
            let _ = answer.send(message);
        }
    }
}

impl Session for NatsSession {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
    ) -> LinkFuture<'a, Result<(), LinkError>> {
        Box::pin(self.send(Subject::from(channel), payload))
    }

    fn request<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
        timeout: Duration,
    ) -> LinkFuture<'a, Result<Bytes, RequestError>> {
        Box::pin(self.ask(channel, payload, timeout))
    }

    fn reply<'a>(&'a self, to: &'a Reply, payload: Bytes) -> LinkFuture<'a, Result<(), LinkError>> {
        Box::pin(async move {
            let subject = Subject::from_utf8(to.0.clone())
                .map_err(|_| LinkError("nats: reply subject is not UTF-8".into()))?;
            self.send(subject, payload).await
        })
    }

    fn subscribe<'a>(&'a self, channels: &'a [String]) -> LinkFuture<'a, Result<(), LinkError>> {
        Box::pin(async move {
            tokio::time::timeout(self.call_timeout, self.add(channels))
                .await
                .unwrap_or_else(|_| Err(self.shared.fail("subscribe not confirmed in time")))
        })
    }

    fn unsubscribe<'a>(&'a self, channels: &'a [String]) -> LinkFuture<'a, Result<(), LinkError>> {
        Box::pin(async move {
            tokio::time::timeout(self.call_timeout, self.remove(channels))
                .await
                .unwrap_or_else(|_| Err(self.shared.fail("unsubscribe not done in time")))
        })
    }

    fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for NatsSession {
    fn drop(&mut self) {
        // The client closes its connection once the subscribers in these tasks are gone too.
        self.router.abort();
        for forwarder in self.subscriptions.get_mut().values() {
            forwarder.abort();
        }
    }
}

/// A prefix the cluster can put channels under: dot-separated tokens without wildcards or
/// whitespace.
fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.split('.').all(|token| {
            !token.is_empty()
                && !token.contains(|c: char| c == '*' || c == '>' || c.is_whitespace())
        })
}

/// A URL's user or password, percent-decoded (a password may hold any byte that way).
fn decode(part: &str) -> String {
    percent_encoding::percent_decode_str(part).decode_utf8_lossy().into_owned()
}

/// A URL with its credentials hidden, for error messages.
fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    match rest.rsplit_once('@') {
        Some((_, host)) if scheme.is_empty() => format!("***@{host}"),
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_first_url_that_has_some() {
        let link = NatsLink::new("nats://127.0.0.1:1, nats://ann:p%40ss@127.0.0.1:2").unwrap();
        assert_eq!(link.servers.len(), 2);
        assert!(
            matches!(&link.credentials, Credentials::UserPassword(u, p) if u == "ann" && p == "p@ss")
        );
        let link = NatsLink::new("nats://s3cret@127.0.0.1:4222").unwrap();
        assert!(matches!(&link.credentials, Credentials::Token(t) if t == "s3cret"));
        let link = NatsLink::new("nats://127.0.0.1:4222").unwrap();
        assert!(matches!(link.credentials, Credentials::None));
        let link = link.token("t");
        assert!(matches!(&link.credentials, Credentials::Token(t) if t == "t"));
    }

    #[test]
    fn errors_and_debug_do_not_show_credentials() {
        assert!(NatsLink::new("").is_err());
        let error = NatsLink::new("nats://ann:secret@[::1").unwrap_err();
        assert!(!error.0.contains("secret"), "{error}");
        let link = NatsLink::new("nats://ann:secret@127.0.0.1:4222").unwrap();
        assert!(!format!("{link:?}").contains("secret"));
    }

    #[test]
    fn prefixes_are_plain_tokens() {
        assert!(valid_prefix("gotalk"));
        assert!(valid_prefix("acme.chat"));
        for bad in ["", ".", "a.", "a..b", "a.*", "a.>", "a b"] {
            assert!(!valid_prefix(bad), "{bad:?}");
        }
    }

    #[test]
    fn channels_join_with_dots() {
        let link = NatsLink::new("nats://127.0.0.1:4222").unwrap();
        assert_eq!(link.channel(&["gotalk", "peer", "x"]), "gotalk.peer.x");
        assert_eq!(link.kind(), "nats");
    }
}
