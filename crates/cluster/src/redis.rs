//! The [`Link`] over Redis pub/sub, with the `redis` crate.
//!
//! A session holds two connections: a subscriber, whose RESP3 pushes are handed to the
//! cluster's bounded queue by a closure that never waits (a full queue drops and counts), and
//! a connection for everything the session publishes, written in the order the calls were
//! handed over, by one task of its own (`redis_publisher`). Neither
//! reconnects: when either connection fails, the session fails every call waiting on it and
//! every later one, the subscriber's end drops the incoming queue, and the cluster's supervisor
//! opens a new session.
//!
//! On a Redis Cluster (`redis+cluster://`, or [`RedisLink::cluster`]) a session has one
//! cluster connection instead of two, which reaches every node: it subscribes with
//! `SSUBSCRIBE` and publishes with `SPUBLISH` (sharded pub/sub, Redis 7), so each message goes
//! only to the shard that owns its channel's slot, where its subscribers are. `SPUBLISH`
//! counts the subscribers on that shard: all of a sharded channel's subscribers. The client
//! reconnects and resubscribes nodes by itself; the session does not let it: the first
//! connection of any node that closes fails the session, as with one server.
//!
//! Redis has no request/reply, so it is built here: a request is published with a
//! correlation number and the name of the session's reply channel, and the answer is published
//! on that channel. `PUBLISH` counts the subscribers that got the message, so a request that
//! reached nobody is [`RequestError::NoSubscriber`] at once.
//!
//! Frames on the bus (the first byte says which):
//! - `0` + payload: a message published with no answer expected;
//! - `1` + correlation (8 bytes, big-endian) + reply channel's length (1 byte) + reply channel +
//!   payload: a request;
//! - `2` + correlation + payload: an answer, on a reply channel.
//!
//! Nothing read from the bus is trusted: a frame that does not parse is dropped and counted,
//! and a reply channel outside this link's prefix is not answered on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    AsyncConnectionConfig, Client, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, PushInfo,
    PushKind, Value,
};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::link::{Incoming, Link, LinkError, LinkFuture, Reply, RequestError, Session};
use crate::redis_publisher::{self, Publisher, Writer};

const PLAIN: u8 = 0;
const REQUEST: u8 = 1;
const ANSWER: u8 = 2;

/// The scheme of a Redis Cluster's URL: `redis+cluster://[user:password@]host:port,host:port`.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// A way to reach one Redis server, `redis://[user:password@]host:port[/db]`, or a Redis
/// Cluster, `redis+cluster://[user:password@]host:port,host:port,...` (any of its nodes; the
/// others are found from them).
///
/// ```no_run
/// # fn demo() -> Result<(), gotalk_cluster::LinkError> {
/// use gotalk_cluster::redis::RedisLink;
/// let link = RedisLink::new("redis://gotalk:secret@127.0.0.1:6379")?;
/// let cluster = RedisLink::new("redis+cluster://gotalk:secret@10.0.0.1:7000,10.0.0.2:7000")?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct RedisLink {
    target: Target,
    prefix: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    max_pending: usize,
}

/// One server, or the first nodes of a cluster.
#[derive(Clone, Debug)]
enum Target {
    Server(Client),
    Cluster(Vec<ConnectionInfo>),
}

impl RedisLink {
    /// A link to the server at `url` (`redis://`; `rediss://` is refused: TLS is not
    /// compiled in), or to the Redis Cluster of a `redis+cluster://` URL. A user and password
    /// in the URL authenticate with Redis's ACL.
    ///
    /// # Errors
    /// [`LinkError`] for a URL that does not parse.
    pub fn new(url: &str) -> Result<Self, LinkError> {
        let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
            return Self::with(Target::Server(Client::open(resp3(url)?).map_err(url_error)?));
        };
        // Credentials and database, if any, are the same for every node.
        let (user, hosts) = rest.rsplit_once('@').map_or(("", rest), |(u, h)| (u, h));
        let (hosts, db) = hosts.split_once('/').map_or((hosts, ""), |(h, d)| (h, d));
        let at = if user.is_empty() { "" } else { "@" };
        let db = if db.is_empty() { String::new() } else { format!("/{db}") };
        Self::cluster(hosts.split(',').map(|host| format!("redis://{user}{at}{host}{db}")))
    }

    /// A link to the Redis Cluster that has these nodes (`redis://[user:password@]host:port`
    /// each; one is enough, the others are found from it). It publishes and subscribes with
    /// sharded pub/sub (`SPUBLISH`, `SSUBSCRIBE`: Redis 7 or later). A user limited to the
    /// prefix also needs `CLUSTER SLOTS` (`+cluster|slots`) to learn where the slots are.
    ///
    /// # Errors
    /// [`LinkError`] for a URL that does not parse, or none at all.
    pub fn cluster<U: AsRef<str>>(nodes: impl IntoIterator<Item = U>) -> Result<Self, LinkError> {
        let nodes =
            nodes.into_iter().map(|url| resp3(url.as_ref())).collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err(LinkError("redis url: a cluster needs at least one node".to_owned()));
        }
        Self::with(Target::Cluster(nodes))
    }

    fn with(target: Target) -> Result<Self, LinkError> {
        Ok(RedisLink {
            target,
            prefix: "gotalk".to_owned(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_millis(1000),
            max_pending: 65_536,
        })
    }

    /// The first part of every reply channel this link subscribes to, `<prefix>:reply:<n>`,
    /// so a Redis user limited to `<prefix>:*` channels can use it. Default `gotalk`. A
    /// [`ClusterBus`](crate::ClusterBus) sets it to its own prefix when it starts; this is for
    /// a link used alone.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long opening a connection may take. Default 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one command (publish, subscribe) may wait for Redis. Default 1 s.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How many calls one session may have waiting: publishes, requests and replies handed
    /// over and not yet written to Redis, and, apart from those, requests waiting for their
    /// answers, each at most this many. Default 65,536; past it a call fails at once (a full
    /// write queue fails the session: the connection is not keeping up).
    pub fn max_pending(mut self, count: usize) -> Self {
        self.max_pending = count;
        self
    }

    /// Whether this link reaches a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    async fn open(&self, incoming: mpsc::Sender<Incoming>) -> Result<Box<dyn Session>, LinkError> {
        let reply_channel = self.channel(&[&self.prefix, "reply", &random_token()]);
        let shared = Arc::new(Shared {
            reply_prefix: self.channel(&[&self.prefix, "reply", ""]),
            reply_channel: reply_channel.clone(),
            incoming: Mutex::new(Some(incoming)),
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
            failed: CancellationToken::new(),
        });
        let pushes = shared.clone();
        let on_push = move |push: PushInfo| {
            pushes.push(push);
            Ok::<(), std::convert::Infallible>(())
        };
        let (subscriber, writer) = match &self.target {
            Target::Server(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.command_timeout));
                let sub_config = config.clone().set_push_sender(on_push);
                let connect = async {
                    let mut subscriber =
                        client.get_multiplexed_async_connection_with_config(&sub_config).await?;
                    let publisher =
                        client.get_multiplexed_async_connection_with_config(&config).await?;
                    subscriber.subscribe(&reply_channel).await?;
                    Ok::<_, ::redis::RedisError>((
                        Subscriber::Server(subscriber),
                        Writer::Server(publisher),
                    ))
                };
                self.connecting(connect).await?
            }
            Target::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.clone())
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(on_push)
                    .connection_timeout(self.connect_timeout)
                    .response_timeout(self.command_timeout)
                    .build()
                    .map_err(url_error)?;
                let connect = async {
                    let mut connection = client.get_async_connection().await?;
                    connection.ssubscribe(&reply_channel).await?;
                    Ok::<_, ::redis::RedisError>((
                        Subscriber::Cluster(connection.clone()),
                        Writer::Cluster(connection),
                    ))
                };
                self.connecting(connect).await?
            }
        };
        let publisher = Publisher::spawn(writer, self.max_pending, shared.failed.clone());
        Ok(Box::new(RedisSession { subscriber, publisher, shared, max_pending: self.max_pending }))
    }

    async fn connecting<T>(
        &self,
        connect: impl std::future::Future<Output = Result<T, ::redis::RedisError>>,
    ) -> Result<T, LinkError> {
        tokio::time::timeout(self.connect_timeout * 2, connect)
            .await
            .map_err(|_| LinkError("redis: connecting took too long".to_owned()))?
            .map_err(link_error)
    }
}

/// `url`'s connection settings, with RESP3, so the subscriber's messages come as pushes to a
/// closure we own.
fn resp3(url: &str) -> Result<ConnectionInfo, LinkError> {
    let info = url.into_connection_info().map_err(url_error)?;
    let redis = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
    Ok(info.set_redis_settings(redis))
}

fn url_error(e: ::redis::RedisError) -> LinkError {
    LinkError(format!("redis url: {e}"))
}

impl Link for RedisLink {
    fn connect(
        &self,
        incoming: mpsc::Sender<Incoming>,
    ) -> LinkFuture<'_, Result<Box<dyn Session>, LinkError>> {
        Box::pin(self.open(incoming))
    }

    fn channel(&self, parts: &[&str]) -> String {
        parts.join(":")
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn set_prefix(&mut self, prefix: &str) {
        prefix.clone_into(&mut self.prefix);
    }
}

fn link_error(e: ::redis::RedisError) -> LinkError {
    LinkError(format!("redis: {e}"))
}

fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// What the subscriber's push closure shares with the session.
struct Shared {
    /// `<prefix>:reply:`: answers are only ever published on channels that start with it.
    reply_prefix: String,
    reply_channel: String,
    /// Taken when the subscriber's connection ends: the cluster sees its queue close.
    incoming: Mutex<Option<mpsc::Sender<Incoming>>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Bytes>>>,
    next: AtomicU64,
    dropped: AtomicU64,
    /// Cancelled once the session has failed, by either connection; never undone.
    failed: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each section is a map or option operation that cannot panic half-way.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Runs on the subscriber connection's reader: it must not wait.
    fn push(&self, push: PushInfo) {
        match push.kind {
            // Sharded channels' messages, on a cluster, come as `smessage`.
            PushKind::Message | PushKind::SMessage => {
                let mut data = push.data.into_iter();
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                else {
                    return self.drop_one();
                };
                let Ok(channel) = String::from_utf8(channel) else { return self.drop_one() };
                self.message(channel, Bytes::from(payload));
            }
            PushKind::Disconnection => {
                redis_publisher::fail(&self.failed, "the subscriber's connection closed");
                lock(&self.incoming).take();
                // Dropping the senders ends every request waiting for an answer.
                lock(&self.pending).clear();
            }
            _ => {}
        }
    }

    fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn message(&self, channel: String, mut frame: Bytes) {
        if frame.is_empty() {
            return self.drop_one();
        }
        let tag = frame[0];
        frame = frame.slice(1..);
        let incoming = match tag {
            PLAIN => Incoming { channel, payload: frame, reply: None },
            REQUEST => {
                let Some((corr, rest)) = split_corr(&frame) else { return self.drop_one() };
                let Some((&len, rest)) = rest.split_first() else { return self.drop_one() };
                let len = usize::from(len);
                if rest.len() < len {
                    return self.drop_one();
                }
                let (to, payload) = rest.split_at(len);
                let reply = std::str::from_utf8(to)
                    .ok()
                    .filter(|to| to.starts_with(&self.reply_prefix))
                    .map(|to| {
                        let mut handle = BytesMut::with_capacity(8 + to.len());
                        handle.put_u64(corr);
                        handle.put_slice(to.as_bytes());
                        Reply(handle.freeze())
                    });
                let Some(reply) = reply else { return self.drop_one() };
                let payload = frame.slice_ref(payload);
                Incoming { channel, payload, reply: Some(reply) }
            }
            ANSWER if channel == self.reply_channel => {
                let Some((corr, payload)) = split_corr(&frame) else { return self.drop_one() };
                let payload = frame.slice_ref(payload);
                // An answer nobody waits for any more (it came too late) is not an error.
                if let Some(waiting) = lock(&self.pending).remove(&corr) {
                    let _ = waiting.send(payload);
                }
                return;
            }
            _ => return self.drop_one(),
        };
        let sender = lock(&self.incoming).clone();
        match sender {
            Some(sender) if sender.try_send(incoming).is_ok() => {}
            _ => self.drop_one(),
        }
    }
}

fn split_corr(frame: &[u8]) -> Option<(u64, &[u8])> {
    let (corr, rest) = frame.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*corr), rest))
}

/// The connection the session subscribes on.
enum Subscriber {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Subscriber {
    async fn subscribe(&self, channels: &[String]) -> Result<(), ::redis::RedisError> {
        match self {
            Subscriber::Server(c) => c.clone().subscribe(channels).await,
            // One command per channel: channels of different slots cannot share one.
            Subscriber::Cluster(c) => {
                let each = channels.iter().map(|ch| async move { c.clone().ssubscribe(ch).await });
                futures_util::future::try_join_all(each).await.map(drop)
            }
        }
    }

    async fn unsubscribe(&self, channels: &[String]) -> Result<(), ::redis::RedisError> {
        match self {
            Subscriber::Server(c) => c.clone().unsubscribe(channels).await,
            Subscriber::Cluster(c) => {
                let each =
                    channels.iter().map(|ch| async move { c.clone().sunsubscribe(ch).await });
                futures_util::future::try_join_all(each).await.map(drop)
            }
        }
    }
}

struct RedisSession {
    subscriber: Subscriber,
    publisher: Publisher,
    shared: Arc<Shared>,
    max_pending: usize,
}

/// Takes a request out of the waiting map however its future ends.
struct Waiting<'a> {
    shared: &'a Shared,
    corr: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.corr);
    }
}

impl RedisSession {
    /// Publishes a frame, handed over in the first poll; the number of subscribers that got
    /// it.
    async fn publish_frame(&self, channel: &str, frame: Bytes) -> Result<i64, LinkError> {
        let written = self.publisher.hand_over(channel, frame)?;
        redis_publisher::written(written).await
    }

    fn usable(&self) -> Result<(), LinkError> {
        if self.shared.failed.is_cancelled() {
            return Err(LinkError("redis: the session failed".to_owned()));
        }
        Ok(())
    }
}

impl Drop for RedisSession {
    fn drop(&mut self) {
        // What is still queued has no caller left (each call borrows the session); written
        // late, it could land after what the session that takes this one's place sends.
        self.shared.failed.cancel();
    }
}

impl Session for RedisSession {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
    ) -> LinkFuture<'a, Result<(), LinkError>> {
        let mut frame = BytesMut::with_capacity(1 + payload.len());
        frame.put_u8(PLAIN);
        frame.put_slice(&payload);
        Box::pin(async move { self.publish_frame(channel, frame.freeze()).await.map(drop) })
    }

    fn request<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
        timeout: Duration,
    ) -> LinkFuture<'a, Result<Bytes, RequestError>> {
        Box::pin(async move {
            let corr = self.shared.next.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            {
                let mut pending = lock(&self.shared.pending);
                if pending.len() >= self.max_pending {
                    return Err(LinkError("redis: too many requests waiting".to_owned()).into());
                }
                pending.insert(corr, tx);
            }
            let _waiting = Waiting { shared: &self.shared, corr };
            let reply_to = self.shared.reply_channel.as_bytes();
            let mut frame = BytesMut::with_capacity(10 + reply_to.len() + payload.len());
            frame.put_u8(REQUEST);
            frame.put_u64(corr);
            frame.put_u8(u8::try_from(reply_to.len()).map_err(|_| {
                LinkError("redis: the reply channel's name is too long".to_owned())
            })?);
            frame.put_slice(reply_to);
            frame.put_slice(&payload);
            let started = tokio::time::Instant::now();
            if self.publish_frame(channel, frame.freeze()).await? == 0 {
                return Err(RequestError::NoSubscriber);
            }
            let closed = || LinkError("redis: the connection closed".to_owned()).into();
            tokio::select! {
                biased;
                answer = tokio::time::timeout_at(started + timeout, rx) => match answer {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(_)) => Err(closed()),
                    Err(_) => Err(RequestError::Timeout),
                },
                // The answer cannot come any more: say so now rather than at the timeout.
                () = self.shared.failed.cancelled() => Err(closed()),
            }
        })
    }

    fn reply<'a>(&'a self, to: &'a Reply, payload: Bytes) -> LinkFuture<'a, Result<(), LinkError>> {
        Box::pin(async move {
            let Some((corr, channel)) = split_corr(&to.0) else {
                return Err(LinkError("redis: not a reply of this link".to_owned()));
            };
            let channel = std::str::from_utf8(channel)
                .ok()
                .filter(|c| c.starts_with(&self.shared.reply_prefix))
                .ok_or_else(|| LinkError("redis: not a reply of this link".to_owned()))?;
            let mut frame = BytesMut::with_capacity(9 + payload.len());
            frame.put_u8(ANSWER);
            frame.put_u64(corr);
            frame.put_slice(&payload);
            self.publish_frame(channel, frame.freeze()).await.map(drop)
        })
    }

    fn subscribe<'a>(&'a self, channels: &'a [String]) -> LinkFuture<'a, Result<(), LinkError>> {
        Box::pin(async move {
            self.usable()?;
            if channels.is_empty() {
                return Ok(());
            }
            self.subscriber.subscribe(channels).await.map_err(link_error)
        })
    }

    fn unsubscribe<'a>(&'a self, channels: &'a [String]) -> LinkFuture<'a, Result<(), LinkError>> {
        Box::pin(async move {
            self.usable()?;
            if channels.is_empty() {
                return Ok(());
            }
            self.subscriber.unsubscribe(channels).await.map_err(link_error)
        })
    }

    fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> (Shared, mpsc::Receiver<Incoming>) {
        let (tx, rx) = mpsc::channel(1);
        let shared = Shared {
            reply_prefix: "p:reply:".to_owned(),
            reply_channel: "p:reply:me".to_owned(),
            incoming: Mutex::new(Some(tx)),
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
            failed: CancellationToken::new(),
        };
        (shared, rx)
    }

    #[test]
    fn a_cluster_url_names_every_node_with_the_same_credentials() {
        let link = RedisLink::new("redis+cluster://u:p@127.0.0.1:7000,127.0.0.1:7001/0").unwrap();
        let Target::Cluster(nodes) = &link.target else { panic!("not a cluster") };
        let nodes: Vec<_> = nodes
            .iter()
            .map(|n| {
                let r = n.redis_settings();
                (n.addr().to_string(), r.username().map(str::to_owned), r.password().is_some())
            })
            .collect();
        assert_eq!(
            nodes,
            [
                ("127.0.0.1:7000".to_owned(), Some("u".to_owned()), true),
                ("127.0.0.1:7001".to_owned(), Some("u".to_owned()), true),
            ]
        );
        assert!(!RedisLink::new("redis://127.0.0.1:1").unwrap().is_cluster());
        assert!(RedisLink::new("redis+cluster://").is_err());
        assert!(RedisLink::cluster(Vec::<String>::new()).is_err());
    }

    #[test]
    fn frames_from_the_bus_are_checked_before_use() {
        let (shared, mut rx) = shared();
        let bad: [&[u8]; 5] = [
            b"",
            &[9, 1, 2],
            &[REQUEST, 0, 0],
            &[REQUEST, 0, 0, 0, 0, 0, 0, 0, 1, 200, b'x'],
            // A reply channel outside the prefix is never answered on.
            &[REQUEST, 0, 0, 0, 0, 0, 0, 0, 1, 3, b'a', b':', b'b', b'x'],
        ];
        for frame in bad {
            shared.message("c".to_owned(), Bytes::copy_from_slice(frame));
        }
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 5);
        assert!(rx.try_recv().is_err());

        let mut good = vec![REQUEST, 0, 0, 0, 0, 0, 0, 0, 7, 10];
        good.extend_from_slice(b"p:reply:xyhello");
        shared.message("c".to_owned(), Bytes::from(good));
        let incoming = rx.try_recv().unwrap();
        assert_eq!(&incoming.payload[..], b"hello");
        let reply = incoming.reply.unwrap();
        assert_eq!(split_corr(&reply.0).unwrap(), (7, &b"p:reply:xy"[..]));

        // The queue holds one: the next is dropped and counted, not waited for.
        shared.message("c".to_owned(), Bytes::from_static(&[PLAIN, 1]));
        shared.message("c".to_owned(), Bytes::from_static(&[PLAIN, 2]));
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 6);
    }
}
