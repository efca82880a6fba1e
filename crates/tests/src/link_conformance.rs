//! What every [`Link`] must do, checked against a real server of its bus: one case per
//! function here, generic over the server ([`BusServer`]) and the link made from its URL.
//!
//! [`link_conformance!`](crate::link_conformance!) turns the cases into `#[tokio::test]`s;
//! `crates/tests/tests/links.rs` instantiates it once per bus.
//!
//! Channels are made with [`Link::channel`] under the prefix [`PREFIX`], the one the limited
//! users of [`servers`](crate::servers) may use.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gotalk_cluster::{Incoming, Link, RequestError, Session};
use tokio::sync::mpsc;

use crate::servers::{Auth, Nats, Redis, RedisCluster};

/// The channel prefix of every case, and the limited users' one.
pub const PREFIX: &str = "gotalk";

/// How long a message that should arrive may take (a busy 2-core machine).
const ARRIVES_WITHIN: Duration = Duration::from_secs(5);

/// How long a message that should not arrive is waited for.
const SILENCE: Duration = Duration::from_millis(300);

/// The capacity of a session's incoming queue unless a case says otherwise.
const QUEUE: usize = 2048;

/// A bus server the suite starts, kills and addresses.
pub trait BusServer: Sized {
    /// The scheme of its URLs (`redis`, `nats`).
    const SCHEME: &'static str;

    /// A server anyone may use.
    fn start() -> impl Future<Output = Self>;

    /// A server whose only client user is `auth`, limited to `auth.prefix`.
    fn start_limited(auth: Auth) -> impl Future<Output = Self>;

    /// Its URL, with the user's credentials when it has one.
    fn url(&self) -> String;

    /// Its client port.
    fn port(&self) -> u16;

    /// SIGKILL.
    fn kill(&mut self);

    /// Starts it again on the same port.
    fn restart(&mut self) -> impl Future<Output = ()>;
}

impl BusServer for Nats {
    const SCHEME: &'static str = "nats";

    fn start() -> impl Future<Output = Self> {
        Nats::start()
    }

    fn start_limited(auth: Auth) -> impl Future<Output = Self> {
        // Inboxes get no permission of their own: a link must make them under the prefix.
        let inbox_prefix = auth.prefix.clone();
        async move { Nats::start_with(auth, &inbox_prefix).await }
    }

    fn url(&self) -> String {
        Nats::url(self)
    }

    fn port(&self) -> u16 {
        Nats::port(self)
    }

    fn kill(&mut self) {
        Nats::kill(self)
    }

    fn restart(&mut self) -> impl Future<Output = ()> {
        Nats::restart(self)
    }
}

impl BusServer for Redis {
    const SCHEME: &'static str = "redis";

    fn start() -> impl Future<Output = Self> {
        Redis::start()
    }

    fn start_limited(auth: Auth) -> impl Future<Output = Self> {
        Redis::start_with(auth)
    }

    fn url(&self) -> String {
        Redis::url(self)
    }

    fn port(&self) -> u16 {
        Redis::port(self)
    }

    fn kill(&mut self) {
        Redis::kill(self)
    }

    fn restart(&mut self) -> impl Future<Output = ()> {
        Redis::restart(self)
    }
}

impl BusServer for RedisCluster {
    const SCHEME: &'static str = "redis+cluster";

    fn start() -> impl Future<Output = Self> {
        RedisCluster::start()
    }

    fn start_limited(auth: Auth) -> impl Future<Output = Self> {
        RedisCluster::start_with(auth)
    }

    fn url(&self) -> String {
        RedisCluster::url(self)
    }

    fn port(&self) -> u16 {
        RedisCluster::port(self)
    }

    /// Every node: the bus is gone as a whole.
    fn kill(&mut self) {
        RedisCluster::kill(self)
    }

    fn restart(&mut self) -> impl Future<Output = ()> {
        RedisCluster::restart(self)
    }
}

/// Turns every case into a `#[tokio::test]` for the server type `$server`, whose links
/// `$make` (a `Fn(&str) -> impl Link`) makes from a URL:
/// `gotalk_tests::link_conformance!(Nats, |url: &str| NatsLink::new(url).unwrap());`
/// inside a module named after the bus.
#[macro_export]
macro_rules! link_conformance {
    ($server:ty, $make:expr) => {
        $crate::link_conformance!(@cases $server, $make;
            publish_reaches_a_subscriber_of_another_session,
            nothing_reaches_a_session_not_subscribed,
            subscribe_is_confirmed_before_it_returns,
            unsubscribe_stops_delivery,
            request_gets_the_reply,
            request_to_a_channel_nobody_subscribes_is_no_subscriber_at_once,
            request_nobody_answers_times_out_at_its_deadline,
            publishes_of_one_session_keep_their_order,
            killed_bus_fails_every_call_within_its_deadline_and_no_reconnect,
            full_incoming_queue_drops_and_counts_without_blocking,
            right_user_and_password_connect,
            wrong_password_fails_connect_with_a_clear_error,
            limited_user_does_all_the_cluster_needs,
            limited_user_cannot_publish_outside_its_prefix,
        );
    };
    (@cases $server:ty, $make:expr; $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if $crate::servers::skip_cluster_tests() {
                    return;
                }
                $crate::link_conformance::$case::<$server, _>($make).await;
            }
        )*
    };
}

fn queue(capacity: usize) -> (mpsc::Sender<Incoming>, mpsc::Receiver<Incoming>) {
    mpsc::channel(capacity)
}

async fn open<L: Link>(link: &L, capacity: usize) -> (Box<dyn Session>, mpsc::Receiver<Incoming>) {
    let (tx, rx) = queue(capacity);
    let session = link.connect(tx).await.expect("connect");
    (session, rx)
}

fn channel<L: Link>(link: &L, name: &str) -> String {
    link.channel(&[PREFIX, "test", name])
}

async fn next(rx: &mut mpsc::Receiver<Incoming>) -> Incoming {
    tokio::time::timeout(ARRIVES_WITHIN, rx.recv())
        .await
        .expect("a message within the deadline")
        .expect("the incoming queue open")
}

async fn nothing(rx: &mut mpsc::Receiver<Incoming>) {
    if let Ok(Some(m)) = tokio::time::timeout(SILENCE, rx.recv()).await {
        panic!("unexpected message on {}: {:?}", m.channel, m.payload);
    }
}

/// Answers every request that comes in with `re:` and its payload, until the queue ends.
fn echo(
    session: std::sync::Arc<dyn Session>,
    mut rx: mpsc::Receiver<Incoming>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if let Some(reply) = &m.reply {
                let mut answer = b"re:".to_vec();
                answer.extend_from_slice(&m.payload);
                session.reply(reply, answer.into()).await.expect("reply");
            }
        }
    })
}

/// A message published by one session reaches another session subscribed to its channel,
/// on that channel, with its payload.
pub async fn publish_reaches_a_subscriber_of_another_session<S: BusServer, L: Link>(
    make: impl Fn(&str) -> L,
) {
    let server = S::start().await;
    let link = make(&server.url());
    let (a, _) = open(&link, QUEUE).await;
    let (b, mut b_rx) = open(&link, QUEUE).await;
    let x = channel(&link, "x");
    b.subscribe(std::slice::from_ref(&x)).await.unwrap();
    a.publish(&x, Bytes::from_static(b"hello")).await.unwrap();
    let m = next(&mut b_rx).await;
    assert_eq!(
        (m.channel.as_str(), &m.payload[..], m.reply.is_none()),
        (x.as_str(), &b"hello"[..], true)
    );
}

/// Sessions subscribed to other channels (one whose name extends the published one) and
/// sessions subscribed to nothing get nothing.
pub async fn nothing_reaches_a_session_not_subscribed<S: BusServer, L: Link>(
    make: impl Fn(&str) -> L,
) {
    let server = S::start().await;
    let link = make(&server.url());
    let (a, _) = open(&link, QUEUE).await;
    let (b, mut b_rx) = open(&link, QUEUE).await;
    let (c, mut c_rx) = open(&link, QUEUE).await;
    let (_d, mut d_rx) = open(&link, QUEUE).await;
    let (x, y, xx) =
        (channel(&link, "x"), channel(&link, "y"), link.channel(&[PREFIX, "test", "x", "x"]));
    b.subscribe(std::slice::from_ref(&x)).await.unwrap();
    c.subscribe(&[y, xx]).await.unwrap();
    a.publish(&x, Bytes::from_static(b"for b")).await.unwrap();
    assert_eq!(&next(&mut b_rx).await.payload[..], b"for b");
    nothing(&mut c_rx).await;
    nothing(&mut d_rx).await;
}

/// A publish from another session right after `subscribe` returns is received, channel
/// after channel: the bus had the subscription when `subscribe` returned.
pub async fn subscribe_is_confirmed_before_it_returns<S: BusServer, L: Link>(
    make: impl Fn(&str) -> L,
) {
    let server = S::start().await;
    let link = make(&server.url());
    let (a, _) = open(&link, QUEUE).await;
    let (b, mut b_rx) = open(&link, QUEUE).await;
    for i in 0..30 {
        let ch = channel(&link, &format!("fresh{i}"));
        b.subscribe(std::slice::from_ref(&ch)).await.unwrap();
        a.publish(&ch, Bytes::from(i.to_string())).await.unwrap();
        let m = next(&mut b_rx).await;
        assert_eq!((m.channel, m.payload), (ch, Bytes::from(i.to_string())), "subscription {i}");
    }
}

/// After `unsubscribe` nothing more comes from that channel, while another subscription of
/// the same session still delivers.
pub async fn unsubscribe_stops_delivery<S: BusServer, L: Link>(make: impl Fn(&str) -> L) {
    let server = S::start().await;
    let link = make(&server.url());
    let (a, _) = open(&link, QUEUE).await;
    let (b, mut b_rx) = open(&link, QUEUE).await;
    let (x, y) = (channel(&link, "x"), channel(&link, "y"));
    b.subscribe(&[x.clone(), y.clone()]).await.unwrap();
    a.publish(&x, Bytes::from_static(b"before")).await.unwrap();
    assert_eq!(&next(&mut b_rx).await.payload[..], b"before");
    b.unsubscribe(std::slice::from_ref(&x)).await.unwrap();
    a.publish(&x, Bytes::from_static(b"after")).await.unwrap();
    a.publish(&y, Bytes::from_static(b"still")).await.unwrap();
    let m = next(&mut b_rx).await;
    assert_eq!((m.channel.as_str(), &m.payload[..]), (y.as_str(), &b"still"[..]));
    nothing(&mut b_rx).await;
}

/// A request reaches the subscriber with a way to answer, and the answer comes back.
pub async fn request_gets_the_reply<S: BusServer, L: Link>(make: impl Fn(&str) -> L) {
    let server = S::start().await;
    let link = make(&server.url());
    let (a, _) = open(&link, QUEUE).await;
    let (b, mut b_rx) = open(&link, QUEUE).await;
    let x = channel(&link, "service");
    b.subscribe(std::slice::from_ref(&x)).await.unwrap();
    let asking = a.request(&x, Bytes::from_static(b"ping"), Duration::from_secs(5));
    let answering = async {
        let m = next(&mut b_rx).await;
        assert_eq!((m.channel.as_str(), &m.payload[..]), (x.as_str(), &b"ping"[..]));
        b.reply(
            m.reply.as_ref().expect("a request carries its reply"),
            Bytes::from_static(b"pong"),
        )
        .await
        .unwrap();
    };
    let (answer, ()) = tokio::join!(asking, answering);
    assert_eq!(answer.unwrap(), Bytes::from_static(b"pong"));
    // And again, to a session that answers several.
    let b: std::sync::Arc<dyn Session> = b.into();
    let _echo = echo(b.clone(), b_rx);
    for i in 0..10 {
        let answer =
            a.request(&x, Bytes::from(i.to_string()), Duration::from_secs(5)).await.unwrap();
        assert_eq!(answer, Bytes::from(format!("re:{i}")));
    }
}

/// A request to a channel nobody subscribes to fails `NoSubscriber` at once, not at its
/// timeout.
pub async fn request_to_a_channel_nobody_subscribes_is_no_subscriber_at_once<
    S: BusServer,
    L: Link,
>(
    make: impl Fn(&str) -> L,
) {
    let server = S::start().await;
    let link = make(&server.url());
    let (a, _) = open(&link, QUEUE).await;
    let nobody = channel(&link, "nobody");
    for _ in 0..3 {
        let start = Instant::now();
        let result = a.request(&nobody, Bytes::from_static(b"?"), Duration::from_secs(5)).await;
        let took = start.elapsed();
        assert_eq!(result, Err(RequestError::NoSubscriber));
        // Known at once, far below the 5 s deadline (with room for a busy machine).
        assert!(took < Duration::from_secs(1), "NoSubscriber after {took:?}");
    }
}

/// A request its subscriber never answers fails `Timeout` at its deadline, not before and
/// not much after.
pub async fn request_nobody_answers_times_out_at_its_deadline<S: BusServer, L: Link>(
    make: impl Fn(&str) -> L,
) {
    let server = S::start().await;
    let link = make(&server.url());
    let (a, _) = open(&link, QUEUE).await;
    let (b, mut b_rx) = open(&link, QUEUE).await;
    let x = channel(&link, "silent");
    b.subscribe(std::slice::from_ref(&x)).await.unwrap();
    let deadline = Duration::from_millis(400);
    let start = Instant::now();
    let result = a.request(&x, Bytes::from_static(b"?"), deadline).await;
    let took = start.elapsed();
    assert_eq!(result, Err(RequestError::Timeout));
    assert!(
        took >= deadline && took < deadline + Duration::from_millis(400),
        "Timeout after {took:?}"
    );
    assert!(next(&mut b_rx).await.reply.is_some(), "the subscriber got the request");
}

/// 1,000 publishes of one session, handed over in order (polled in order, awaited
/// together), arrive in that order.
pub async fn publishes_of_one_session_keep_their_order<S: BusServer, L: Link>(
    make: impl Fn(&str) -> L,
) {
    const N: usize = 1000;
    let server = S::start().await;
    let link = make(&server.url());
    let (a, _) = open(&link, QUEUE).await;
    let (b, mut b_rx) = open(&link, QUEUE).await;
    let x = channel(&link, "ordered");
    b.subscribe(std::slice::from_ref(&x)).await.unwrap();
    let sends = (0..N).map(|i| a.publish(&x, Bytes::from(i.to_string())));
    for result in futures_util::future::join_all(sends).await {
        result.unwrap();
    }
    for i in 0..N {
        assert_eq!(next(&mut b_rx).await.payload, Bytes::from(i.to_string()), "message {i}");
    }
    assert_eq!(b.dropped(), 0);
}

/// Once the bus is killed every call fails within its deadline, and the session stays
/// failed when the bus comes back: it never reconnects by itself.
pub async fn killed_bus_fails_every_call_within_its_deadline_and_no_reconnect<
    S: BusServer,
    L: Link,
>(
    make: impl Fn(&str) -> L,
) {
    let mut server = S::start().await;
    let link = make(&server.url());
    let (a, _a_rx) = open(&link, QUEUE).await;
    let (b, mut b_rx) = open(&link, QUEUE).await;
    let x = channel(&link, "x");
    b.subscribe(std::slice::from_ref(&x)).await.unwrap();
    a.publish(&x, Bytes::from_static(b"up")).await.unwrap();
    assert_eq!(&next(&mut b_rx).await.payload[..], b"up");
    a.request(&x, Bytes::from_static(b"asked before"), Duration::from_millis(1))
        .await
        .expect_err("nobody answers");
    let asked_before = next(&mut b_rx).await;

    server.kill();
    let bound = Duration::from_secs(3);
    // Each call returns within `bound`; the first may still see the bus as up (it has not
    // noticed yet), but within a few rounds every call fails.
    let start = Instant::now();
    loop {
        let call = Instant::now();
        let publish = a.publish(&x, Bytes::from_static(b"down")).await;
        assert!(call.elapsed() < bound, "publish took {:?}", call.elapsed());
        if publish.is_err() {
            break;
        }
        assert!(
            start.elapsed() < bound,
            "publish still succeeds {:?} after the kill",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = async {
        let timeout = Duration::from_secs(2);
        let call = Instant::now();
        let answer = a.request(&x, Bytes::from_static(b"?"), timeout).await;
        assert!(matches!(answer, Err(RequestError::Link(_) | RequestError::Timeout)), "{answer:?}");
        assert!(
            call.elapsed() <= timeout + Duration::from_millis(500),
            "request took {:?}",
            call.elapsed()
        );
        for (name, result) in [
            ("subscribe", a.subscribe(&[channel(&link, "new")]).await),
            ("unsubscribe", a.unsubscribe(std::slice::from_ref(&x)).await),
        ] {
            assert!(result.is_err(), "{name} on a dead bus: {result:?}");
        }
        // `b` is a connection of its own: it notices the bus is gone by itself, within the
        // same bound, and fails from then on.
        let start = Instant::now();
        while b.reply(asked_before.reply.as_ref().unwrap(), Bytes::new()).await.is_ok() {
            assert!(start.elapsed() < bound, "b's reply still succeeds {:?} on", start.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let published = b.publish(&x, Bytes::new()).await;
        assert!(published.is_err(), "b's publish on a dead bus: {published:?}");
    };
    tokio::time::timeout(Duration::from_secs(10), calls).await.expect("no call hangs");

    server.restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = a.publish(&x, Bytes::from_static(b"back")).await;
    assert!(after.is_err(), "the session came back by itself: {after:?}");
    // A new session works.
    let (c, mut c_rx) = open(&link, QUEUE).await;
    c.subscribe(std::slice::from_ref(&x)).await.unwrap();
    c.publish(&x, Bytes::from_static(b"new")).await.unwrap();
    assert_eq!(&next(&mut c_rx).await.payload[..], b"new");
}

/// A session whose incoming queue is full drops what comes in and counts it, and its own
/// calls still work (its reader never waits on the queue); once read, the queue fills again.
pub async fn full_incoming_queue_drops_and_counts_without_blocking<S: BusServer, L: Link>(
    make: impl Fn(&str) -> L,
) {
    const CAPACITY: usize = 4;
    const SENT: usize = 100;
    let server = S::start().await;
    let link = make(&server.url());
    let (a, mut a_rx) = open(&link, QUEUE).await;
    let (b, mut b_rx) = open(&link, CAPACITY).await;
    let x = channel(&link, "flood");
    b.subscribe(std::slice::from_ref(&x)).await.unwrap();
    for i in 0..SENT {
        a.publish(&x, Bytes::from(i.to_string())).await.unwrap();
    }
    let start = Instant::now();
    while b.dropped() < (SENT - CAPACITY) as u64 {
        assert!(start.elapsed() < ARRIVES_WITHIN, "dropped {} of {SENT}", b.dropped());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The full queue does not stop the session: it still subscribes (confirmed by the bus,
    // which needs its reader) and publishes.
    let y = channel(&link, "other");
    a.subscribe(std::slice::from_ref(&y)).await.unwrap();
    tokio::time::timeout(ARRIVES_WITHIN, b.subscribe(&[channel(&link, "more")]))
        .await
        .expect("subscribe does not wait on the full queue")
        .unwrap();
    b.publish(&y, Bytes::from_static(b"from b")).await.unwrap();
    assert_eq!(&next(&mut a_rx).await.payload[..], b"from b");
    // Every message is delivered or counted, none twice.
    for i in 0..CAPACITY {
        assert_eq!(next(&mut b_rx).await.payload, Bytes::from(i.to_string()));
    }
    assert_eq!(b.dropped(), (SENT - CAPACITY) as u64);
    a.publish(&x, Bytes::from_static(b"room again")).await.unwrap();
    assert_eq!(&next(&mut b_rx).await.payload[..], b"room again");
}

/// The limited user connects with its password and works.
pub async fn right_user_and_password_connect<S: BusServer, L: Link>(make: impl Fn(&str) -> L) {
    let server = S::start_limited(Auth::new(PREFIX)).await;
    let link = make(&server.url());
    let (a, mut a_rx) = open(&link, QUEUE).await;
    let x = channel(&link, "x");
    a.subscribe(std::slice::from_ref(&x)).await.unwrap();
    a.publish(&x, Bytes::from_static(b"in")).await.unwrap();
    assert_eq!(&next(&mut a_rx).await.payload[..], b"in");
}

/// A wrong password fails `connect` at once with an error that says so, and a user that
/// does not exist too.
pub async fn wrong_password_fails_connect_with_a_clear_error<S: BusServer, L: Link>(
    make: impl Fn(&str) -> L,
) {
    let auth = Auth::new(PREFIX);
    let server = S::start_limited(auth.clone()).await;
    for (user, password) in [(auth.user.as_str(), "wrong"), ("nobody", auth.password.as_str())] {
        let url = format!("{}://{user}:{password}@127.0.0.1:{}", S::SCHEME, server.port());
        let link = make(&url);
        let start = Instant::now();
        let error = match link.connect(queue(QUEUE).0).await {
            Ok(_) => panic!("{user}:{password} connected"),
            Err(e) => e,
        };
        assert!(start.elapsed() < Duration::from_secs(2), "refused after {:?}", start.elapsed());
        let text = error.to_string().to_lowercase();
        assert!(text.contains("auth") || text.contains("password"), "unclear: {error}");
        assert!(
            !text.contains(&auth.password.to_lowercase()),
            "the error shows the password: {error}"
        );
    }
}

/// The user limited to the prefix can do everything the cluster does: subscribe to a peer,
/// an instance, the broadcast, a group and presence channel, publish, request and answer,
/// learn that nobody subscribes, unsubscribe.
pub async fn limited_user_does_all_the_cluster_needs<S: BusServer, L: Link>(
    make: impl Fn(&str) -> L,
) {
    let server = S::start_limited(Auth::new(PREFIX)).await;
    let link = make(&server.url());
    let (a, _) = open(&link, QUEUE).await;
    let (b, mut b_rx) = open(&link, QUEUE).await;
    let channels: Vec<String> = [
        &["peer", "6f1c1f6e-0b9a-4c1e-9d7e-2f0c4b8a9e11"][..],
        &["inst", "3b5d"],
        &["all"],
        &["group", "lobby"],
        &["presence"],
    ]
    .iter()
    .map(|parts| link.channel(&[&[PREFIX], *parts].concat()))
    .collect();
    b.subscribe(&channels).await.unwrap();
    for ch in &channels {
        a.publish(ch, Bytes::from(ch.clone())).await.unwrap();
        let m = next(&mut b_rx).await;
        assert_eq!((&m.channel, m.payload), (ch, Bytes::from(ch.clone())));
    }
    let peer = &channels[0];
    let answering = async {
        let m = next(&mut b_rx).await;
        b.reply(m.reply.as_ref().unwrap(), Bytes::from_static(b"answer")).await.unwrap();
    };
    let (answer, ()) =
        tokio::join!(a.request(peer, Bytes::from_static(b"q"), Duration::from_secs(5)), answering);
    assert_eq!(answer.unwrap(), Bytes::from_static(b"answer"));
    let nobody = link.channel(&[PREFIX, "peer", "nobody"]);
    assert_eq!(
        a.request(&nobody, Bytes::new(), Duration::from_secs(5)).await,
        Err(RequestError::NoSubscriber)
    );
    b.unsubscribe(&channels).await.unwrap();
    assert_eq!(
        a.request(peer, Bytes::new(), Duration::from_secs(5)).await,
        Err(RequestError::NoSubscriber)
    );
}

/// The limited user's request outside its prefix goes nowhere: refused (an error) or
/// dropped by the bus (no answer, not even "no subscriber"), while the same request inside
/// the prefix is answered "no subscriber" at once, and an open bus answers it that way too.
pub async fn limited_user_cannot_publish_outside_its_prefix<S: BusServer, L: Link>(
    make: impl Fn(&str) -> L,
) {
    let open_server = S::start().await;
    let open_link = make(&open_server.url());
    let (o, _) = open(&open_link, QUEUE).await;
    let outside = open_link.channel(&["elsewhere", "x"]);
    let timeout = Duration::from_millis(500);
    assert_eq!(o.request(&outside, Bytes::new(), timeout).await, Err(RequestError::NoSubscriber));

    let server = S::start_limited(Auth::new(PREFIX)).await;
    let link = make(&server.url());
    let (a, _) = open(&link, QUEUE).await;
    let inside = link.channel(&[PREFIX, "nobody"]);
    assert_eq!(a.request(&inside, Bytes::new(), timeout).await, Err(RequestError::NoSubscriber));
    let result = a.request(&outside, Bytes::new(), timeout).await;
    assert!(
        matches!(result, Err(RequestError::Timeout | RequestError::Link(_))),
        "outside the prefix: {result:?}"
    );
}
