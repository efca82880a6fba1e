//! The seam between the cluster and one message bus: what a bus must offer, and nothing more.
//!
//! A [`Link`] opens [`Session`]s: one live connection (or a few) to the bus. The cluster's
//! supervisor owns the session, and throws it away and opens another when it fails or when
//! its probe finds it silently dead; a session never reconnects by itself, so no message is
//! queued in a client library while the bus is away.
//!
//! Channel names are built by the cluster from its prefix, fixed words, server-made ids and
//! checked group names only ([`Link::channel`] joins them with the bus's separator), so no
//! string from a peer reaches a bus unchecked.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

/// A future a link returns.
pub type LinkFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A failure of the bus: the session is no longer usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bus: {0}")]
pub struct LinkError(pub String);

/// Why a request got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Nobody subscribes to the channel: known at once, the message went nowhere.
    #[error("no subscriber")]
    NoSubscriber,
    /// Delivered to a subscriber, no answer within the timeout.
    #[error("no answer in time")]
    Timeout,
    /// The bus failed; whether the message went anywhere is unknown.
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// How to answer a request that came in: handed to [`Session::reply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply(pub Bytes);

/// A message that came in on a subscribed channel.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// The channel it came on.
    pub channel: String,
    /// Its payload.
    pub payload: Bytes,
    /// Present when the sender waits for an answer ([`Session::request`]).
    pub reply: Option<Reply>,
}

/// A way to reach one message bus.
pub trait Link: Send + Sync + 'static {
    /// Opens a session; what comes in on its subscriptions goes into `incoming`, a bounded
    /// queue whose overflow the session drops and counts ([`Session::dropped`]) rather than
    /// block its reader.
    fn connect(
        &self,
        incoming: mpsc::Sender<Incoming>,
    ) -> LinkFuture<'_, Result<Box<dyn Session>, LinkError>>;

    /// A channel name of these parts, joined with the bus's separator (`:` for Redis, `.` for
    /// NATS). Every part is a fixed word, an id made by the server or a checked group name.
    fn channel(&self, parts: &[&str]) -> String;

    /// The bus's name in logs and metrics: `redis`, `nats`.
    fn kind(&self) -> &'static str;

    /// Takes the cluster's channel prefix, for the channels the link names itself (Redis
    /// reply channels, NATS request inboxes), so a bus user limited to the prefix can do
    /// everything. [`ClusterBus::start`](crate::ClusterBus::start) calls it with the
    /// settings' prefix: the two cannot differ. A link that names no channel of its own
    /// ignores it.
    fn set_prefix(&mut self, prefix: &str) {
        let _ = prefix;
    }
}

/// One live connection to the bus. Every call has a deadline of its own and fails rather
/// than wait for a bus that has gone; after a failure the cluster drops the session.
///
/// Order: a publish or request is handed to the bus when its future is first polled, and
/// messages handed over one after another go out in that order. The cluster keeps a sender's
/// messages in order by polling them in order, while their answers come back concurrently.
pub trait Session: Send + Sync {
    /// Publishes `payload` on `channel`, at most once, with no answer.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
    ) -> LinkFuture<'a, Result<(), LinkError>>;

    /// Publishes `payload` on `channel` and waits up to `timeout` for a subscriber's answer.
    /// [`RequestError::NoSubscriber`] when nobody subscribes to it, known without waiting.
    fn request<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
        timeout: Duration,
    ) -> LinkFuture<'a, Result<Bytes, RequestError>>;

    /// Answers a request that came in.
    fn reply<'a>(&'a self, to: &'a Reply, payload: Bytes) -> LinkFuture<'a, Result<(), LinkError>>;

    /// Subscribes to `channels`; done once the bus has confirmed every one.
    fn subscribe<'a>(&'a self, channels: &'a [String]) -> LinkFuture<'a, Result<(), LinkError>>;

    /// Unsubscribes from `channels`.
    fn unsubscribe<'a>(&'a self, channels: &'a [String]) -> LinkFuture<'a, Result<(), LinkError>>;

    /// Messages that came in and were dropped because the incoming queue was full.
    fn dropped(&self) -> u64;
}
