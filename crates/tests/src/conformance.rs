//! One conformance suite for every relay bus: the one-process [`LocalBus`] (a "cluster" whose
//! instances share one bus), and [`ClusterBus`] over each real message bus.
//!
//! An instance is a real gotalk TCP server on 127.0.0.1:0 serving the relay with its own bus,
//! and peers are real gotalk clients connected to the instance a case chooses, so every
//! cross-instance path goes through the bus. Each case is a function over a [`Backend`]; the
//! test target `cluster` runs each against each bus. Cases that need the bus server itself
//! (outages, pauses) take a [`BusServer`] too, and do not apply to the one-process bus.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use gotalk::protocol::relay::PeerId;
use gotalk::relay::{Bus, Group, Inbox, LocalBus, Note, Relay, Undelivered};
use gotalk::{Config, Error, Handlers, Sock};
use gotalk_cluster::{ClusterBus, ClusterSettings};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The most any one step may take before the case fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the case past [`WAIT`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: not within {WAIT:?}"),
    }
}

/// Polls `cond` until it holds, failing the case past `limit`.
pub async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A bus made for one instance, and the cluster handle behind it if it is one.
pub struct Made {
    /// What the instance's relay uses.
    pub bus: Arc<dyn Bus>,
    /// The same bus as a [`ClusterBus`]: None for the one-process bus.
    pub cluster: Option<Arc<ClusterBus>>,
}

type MakeFn = dyn Fn(ClusterSettings) -> Pin<Box<dyn Future<Output = Made> + Send>> + Send + Sync;

/// How to make each instance's bus.
#[derive(Clone)]
pub struct Backend {
    /// For messages: `local`, `redis`, `nats`.
    pub name: &'static str,
    make: Arc<MakeFn>,
}

impl Backend {
    /// One [`LocalBus`] shared by every instance.
    pub fn local() -> Backend {
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::new());
        Backend {
            name: "local",
            make: Arc::new(move |_| {
                let bus = bus.clone();
                Box::pin(async move { Made { bus, cluster: None } })
            }),
        }
    }

    /// A [`ClusterBus`] per instance, started by `start` with the settings a case asks for.
    pub fn cluster<F, Fut>(name: &'static str, start: F) -> Backend
    where
        F: Fn(ClusterSettings) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Arc<ClusterBus>> + Send + 'static,
    {
        Backend {
            name,
            make: Arc::new(move |settings| {
                let started = start(settings);
                Box::pin(async move {
                    let cluster = started.await;
                    Made { bus: cluster.clone(), cluster: Some(cluster) }
                })
            }),
        }
    }

    async fn make(&self, settings: ClusterSettings) -> Made {
        (self.make)(settings).await
    }

    fn clustered(&self) -> bool {
        self.name != "local"
    }
}

/// The bus server of a cluster backend, for the cases that disturb it.
pub trait BusServer: Send {
    /// SIGKILL.
    fn kill(&mut self);
    /// Starts it again on the same port, empty.
    fn restart(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// SIGSTOP.
    fn pause(&self);
    /// SIGCONT.
    fn resume(&self);
}

impl BusServer for crate::servers::Redis {
    fn kill(&mut self) {
        crate::servers::Redis::kill(self);
    }
    fn restart(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(crate::servers::Redis::restart(self))
    }
    fn pause(&self) {
        crate::servers::Redis::pause(self);
    }
    fn resume(&self) {
        crate::servers::Redis::resume(self);
    }
}

impl BusServer for crate::servers::RedisCluster {
    fn kill(&mut self) {
        crate::servers::RedisCluster::kill(self);
    }
    fn restart(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(crate::servers::RedisCluster::restart(self))
    }
    fn pause(&self) {
        crate::servers::RedisCluster::pause(self);
    }
    fn resume(&self) {
        crate::servers::RedisCluster::resume(self);
    }
}

impl BusServer for crate::servers::Nats {
    fn kill(&mut self) {
        crate::servers::Nats::kill(self);
    }
    fn restart(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(crate::servers::Nats::restart(self))
    }
    fn pause(&self) {
        crate::servers::Nats::pause(self);
    }
    fn resume(&self) {
        crate::servers::Nats::resume(self);
    }
}

/// One gateway instance: a gotalk TCP server with the relay on its own bus.
pub struct Instance {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its relay (the application's handle: groups, members, history).
    pub relay: Relay,
    /// Its bus, as a cluster bus.
    pub cluster: Option<Arc<ClusterBus>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

#[derive(Deserialize)]
struct JoinArgs {
    group: String,
    meta: String,
}

impl Instance {
    /// An instance with default settings.
    pub async fn start(backend: &Backend) -> Instance {
        Instance::start_with(backend, ClusterSettings::default(), Relay::new(), Config::default())
            .await
    }

    /// An instance whose bus has `settings`, whose relay is `relay` (its bus replaced) and
    /// whose server has `config`. Its peers can `join` and `leave` groups by request.
    pub async fn start_with(
        backend: &Backend,
        settings: ClusterSettings,
        relay: Relay,
        config: Config,
    ) -> Instance {
        let made = backend.make(settings).await;
        let relay = relay.bus(made.bus);
        let mut handlers = Handlers::new();
        handlers.relay(relay.clone());
        let r = relay.clone();
        handlers.handle("join", move |sock: Sock, args: JoinArgs| {
            let r = r.clone();
            async move {
                let group = Group::new(args.group)
                    .map_err(|e| gotalk::HandlerError::text(e.to_string()))?;
                r.join(&sock, &group, args.meta)
                    .map_err(|e| gotalk::HandlerError::text(e.to_string()))
            }
        });
        let r = relay.clone();
        handlers.handle("leave", move |sock: Sock, group: String| {
            let r = r.clone();
            async move {
                let group =
                    Group::new(group).map_err(|e| gotalk::HandlerError::text(e.to_string()))?;
                r.leave(&sock, &group);
                Ok::<(), gotalk::HandlerError>(())
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let server = gotalk::tcp::Server::new(Arc::new(handlers), config);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.run(listener, stopped));
        Instance { addr, relay, cluster: made.cluster, stop: Some(stop), task }
    }

    /// A client of this instance.
    pub async fn peer(&self) -> Peer {
        Peer::connect(self.addr, Config::default()).await
    }

    /// A client of this instance with `config`.
    pub async fn peer_with(&self, config: Config) -> Peer {
        Peer::connect(self.addr, config).await
    }

    /// Stops the server and shuts its cluster bus down.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = within("the server stops", &mut self.task).await;
        if let Some(cluster) = &self.cluster {
            cluster.shutdown().await;
        }
    }
}

/// A client: its connection, its relay inbox, and the group notes (`note`) it receives.
pub struct Peer {
    /// The connection.
    pub sock: Sock,
    /// Relayed messages by topic.
    pub inbox: Inbox,
    /// Its relay id.
    pub id: PeerId,
    /// The payloads of the `note` notifications it received.
    pub notes: mpsc::Receiver<Bytes>,
}

impl Peer {
    async fn connect(addr: SocketAddr, config: Config) -> Peer {
        let inbox = Inbox::new();
        inbox.queue(4096);
        let mut handlers = Handlers::new();
        inbox.install(&mut handlers);
        let (tx, notes) = mpsc::channel(4096);
        handlers.handle_buffer_notification("note", move |_sock, payload| {
            let _ = tx.try_send(payload);
            std::future::ready(())
        });
        let sock = within("connect", gotalk::tcp::connect(addr, Arc::new(handlers), config))
            .await
            .expect("connect");
        let id = within("the relay id", inbox.id()).await;
        Peer { sock, inbox, id, notes }
    }

    /// Joins `group` through its instance, described by `meta`.
    pub async fn join(&self, group: &str, meta: &str) {
        let args = serde_json::json!({"group": group, "meta": meta});
        within("join", self.sock.request::<_, ()>("join", &args)).await.expect("join");
    }

    /// The next note, as text.
    pub async fn note(&mut self) -> String {
        let note = within("a note", self.notes.recv()).await.expect("notes open");
        String::from_utf8(note.to_vec()).expect("a note is text")
    }
}

fn note(text: &str) -> Note {
    Note::new("note", Bytes::from(format!("\"{text}\""))).expect("a short name")
}

fn is_retry(err: &Error, text: &str) -> bool {
    matches!(err, Error::Retry { message, .. } if message == text)
}

fn is_remote(err: &Error, text: &str) -> bool {
    matches!(err, Error::Remote(t) if t == text)
}

/// A relay to a peer on another instance: delivered with sender, topic and body intact, in
/// the request form and the notification form.
pub async fn relay_across_instances(backend: &Backend) {
    let (a, b) = (Instance::start(backend).await, Instance::start(backend).await);
    let (pa, pb) = (a.peer().await, b.peer().await);
    let mut offers = pb.inbox.topic("offer");
    let body = serde_json::json!({"sdp": "v=0\r\n", "n": [1, 2, 3]});
    within("relay", pa.sock.relay(pb.id, "offer", &body)).await.expect("relay");
    let message = within("delivery", offers.recv()).await.unwrap();
    assert_eq!(message.from, pa.id);
    assert_eq!(message.topic, "offer");
    assert_eq!(message.json::<serde_json::Value>().unwrap(), body);
    within("notify", pa.sock.relay_notify(pb.id, "offer", &"fire")).await.unwrap();
    let message = within("delivery", offers.recv()).await.unwrap();
    assert_eq!((message.from, message.json::<String>().unwrap()), (pa.id, "fire".into()));
    a.stop().await;
    b.stop().await;
}

/// An id nobody has: "unknown peer" at once (never after a timeout), and the notice for the
/// notification form.
pub async fn unknown_peer_is_fast(backend: &Backend) {
    let (a, b) = (Instance::start(backend).await, Instance::start(backend).await);
    let pa = a.peer().await;
    let _pb = b.peer().await;
    let mut notices = pa.inbox.undelivered();
    let nobody = PeerId::from_random(rand::random());
    // The first one warms the connections; the figure is taken on the next ones.
    let _ = pa.sock.relay(nobody, "t", &1).await;
    for _ in 0..5 {
        let started = Instant::now();
        let err = within("relay", pa.sock.relay(nobody, "t", &1)).await.unwrap_err();
        let took = started.elapsed();
        assert!(is_remote(&err, "unknown peer"), "{err:?}");
        // Known at once, not after the relay timeout (1 s); the bound leaves room for a busy
        // machine.
        assert!(took < Duration::from_millis(500), "unknown peer took {took:?}");
    }
    pa.sock.relay_notify(nobody, "t", &1).await.unwrap();
    let notice = within("the notice", notices.recv()).await.unwrap();
    assert_eq!(
        notice,
        Undelivered { to: Some(nobody), topic: Some("t".into()), error: "unknown peer".into() }
    );
    a.stop().await;
    b.stop().await;
}

/// The gotalk hello a client of ours sends and receives.
const HELLO: &[u8] = b"R$hi!00000000";

/// A peer on `addr` that completes the handshake, reads its id and never reads again, with
/// a small receive buffer so the server's writes to it back up at once.
async fn stalled_peer(addr: SocketAddr) -> (tokio::net::TcpStream, PeerId) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(b"01").await.unwrap();
    stream.write_all(HELLO).await.unwrap();
    // `01`, the hello, then `n003$id`, an 8-digit size and `"<36 characters>"`.
    let at = 2 + HELLO.len() + 1 + 3 + 3 + 8;
    let mut head = vec![0u8; at + 38];
    within("the id", stream.read_exact(&mut head)).await.unwrap();
    (stream, serde_json::from_slice(&head[at..]).unwrap())
}

/// A recipient on another instance whose queue is full: the sender gets the RetryResult.
pub async fn remote_full_queue(backend: &Backend) {
    let a = Instance::start(backend).await;
    let relay = Relay::new().queue_bytes(64 * 1024);
    let config = Config::default().send_queue_bytes(16 * 1024);
    let b = Instance::start_with(backend, ClusterSettings::default(), relay, config).await;
    let (stalled_stream, stalled) = stalled_peer(b.addr).await;
    let sender = a.peer_with(Config::default().max_retries(0)).await;
    let chunk = "y".repeat(8 * 1024);
    let mut queued = 0;
    let full = loop {
        match within("relay", sender.sock.relay(stalled, "t", &chunk)).await {
            Ok(()) => queued += 1,
            Err(e) => break e,
        }
        assert!(queued < 5000, "the stalled peer's queue never filled");
    };
    assert!(is_retry(&full, "recipient's queue is full"), "{full:?}");
    drop(stalled_stream);
    a.stop().await;
    b.stop().await;
}

/// 2,000 relays from one peer to a peer on another instance, 32 in flight at a time, arrive
/// in the order they were sent.
pub async fn order_is_kept(backend: &Backend) {
    let (a, b) = (Instance::start(backend).await, Instance::start(backend).await);
    // No retries: a relay refused as "queue full" (a recipient slow on a busy machine) and
    // sent again would arrive after later ones, by the client's doing, not the bus's.
    let (pa, pb) = (a.peer_with(Config::default().max_retries(0)).await, b.peer().await);
    let mut seq = pb.inbox.topic("seq");
    const N: usize = 2000;
    let (expect, mut expected) = tokio::sync::watch::channel(None::<usize>);
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(N);
        loop {
            if expected.borrow().is_some_and(|n| got.len() >= n) {
                break;
            }
            tokio::select! {
                m = tokio::time::timeout(WAIT, seq.recv()) => match m {
                    Ok(Some(m)) => got.push(m.json::<usize>().unwrap()),
                    _ => break,
                },
                _ = expected.changed() => {}
            }
        }
        got
    });
    let sock = pa.sock.clone();
    let to = pb.id;
    let results: Vec<Result<(), Error>> = stream::iter(0..N)
        .map(|i| {
            let sock = sock.clone();
            async move { sock.relay(to, "seq", &i).await }
        })
        .buffered(32)
        .collect()
        .await;
    let mut delivered = Vec::new();
    for (i, result) in results.iter().enumerate() {
        match result {
            Ok(()) => delivered.push(i),
            Err(e) => assert!(is_retry(e, gotalk::protocol::relay::QUEUE_FULL), "relay {i}: {e:?}"),
        }
    }
    assert!(delivered.len() >= N / 2, "most are delivered: {} of {N}", delivered.len());
    expect.send_replace(Some(delivered.len()));
    let got = within("every delivery", reader).await.unwrap();
    if got != delivered {
        let at = got.iter().zip(&delivered).take_while(|(g, d)| g == d).count();
        let (g, d) = (&got[at..got.len().min(at + 8)], &delivered[at..delivered.len().min(at + 8)]);
        panic!(
            "not in the order sent: {} received, {} delivered; from #{at} received {g:?}, \
             delivered {d:?}",
            got.len(),
            delivered.len()
        );
    }
    a.stop().await;
    b.stop().await;
}

/// A peer is told its id only once every instance can reach it: a relay sent the moment a
/// new peer learns its id, from another instance, is delivered.
pub async fn id_is_told_once_reachable(backend: &Backend) {
    let (a, b) = (Instance::start(backend).await, Instance::start(backend).await);
    let pa = a.peer().await;
    for round in 0..20 {
        let fresh = b.peer().await;
        let mut hi = fresh.inbox.topic("hi");
        // `fresh.id` came with `$id`; another peer learns it out of band, at once.
        let sent = pa.sock.relay(fresh.id, "hi", &round).await;
        assert!(sent.is_ok(), "round {round}: {sent:?}");
        assert_eq!(within("hi", hi.recv()).await.unwrap().json::<i32>().unwrap(), round);
    }
    a.stop().await;
    b.stop().await;
}

/// Members on three instances: a publish reaches each exactly once (but the excepted one),
/// member lists and counts converge everywhere, a broadcast reaches every peer, and an
/// instance whose first member joins late gets the group's kept messages from the others.
pub async fn groups_across_instances(backend: &Backend) {
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(Instance::start(backend).await);
    }
    let mut members = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        for j in 0..2 {
            let peer = instance.peer().await;
            peer.join("lobby", &format!("{{\"name\":\"m{i}{j}\"}}")).await;
            members.push(peer);
        }
    }
    let lobby = Group::new("lobby").unwrap();
    let ids: HashSet<PeerId> = members.iter().map(|m| m.id).collect();
    for instance in &instances {
        eventually("members converge", WAIT, || {
            let seen: HashSet<PeerId> =
                instance.relay.members(&lobby).iter().map(|m| m.peer).collect();
            seen == ids && instance.relay.members(&lobby).len() == 6
        })
        .await;
        eventually("counts converge", WAIT, || instance.relay.groups() == vec![(lobby.clone(), 6)])
            .await;
    }
    let sender = members[0].id;
    // Publishers on different instances are not ordered with each other: one at a time.
    instances[0].relay.publish(&lobby, note("one").except(sender)).unwrap();
    for member in &mut members[1..] {
        assert_eq!(member.note().await, "\"one\"");
    }
    instances[1].relay.publish(&lobby, note("two")).unwrap();
    for (k, member) in members.iter_mut().enumerate() {
        // The excepted sender's first is this one; the others' "one" came exactly once.
        assert_eq!(member.note().await, "\"two\"", "member {k}: once, and nothing in between");
    }
    instances[2].relay.broadcast(note("all")).unwrap();
    for member in &mut members {
        assert_eq!(member.note().await, "\"all\"");
    }

    for n in 0..3 {
        instances[0].relay.publish(&lobby, note(&format!("kept{n}")).keep(2)).unwrap();
    }
    for member in &mut members {
        for n in 0..3 {
            assert_eq!(member.note().await, format!("\"kept{n}\""));
        }
    }
    // Its first member joins as soon as it can: the instance waits to hear who has members
    // before it asks for the kept messages.
    let late = Instance::start(backend).await;
    let newcomer = late.peer().await;
    newcomer.join("lobby", "{}").await;
    let kept = within("history", late.relay.history(&lobby)).await;
    let kept: Vec<Bytes> = kept.into_iter().map(|n| n.payload).collect();
    assert_eq!(kept, vec![Bytes::from("\"kept1\""), Bytes::from("\"kept2\"")]);
    for member in &mut members {
        assert!(member.notes.try_recv().is_err(), "nothing twice");
    }
    late.stop().await;
    for instance in instances {
        instance.stop().await;
    }
}

/// An instance whose first member joins a group the moment the instance has started, before
/// it can have heard from the others who is where, still gets the group's kept messages: it
/// waits for the others' answers to its hello before choosing whom to ask. So does a history
/// asked for with no member here.
pub async fn history_right_after_start(backend: &Backend) {
    let settings = ClusterSettings::default;
    let a = backend.make(settings()).await.bus;
    let holder = PeerId::from_random(rand::random());
    within("register", a.register(holder, gotalk::relay::Mailbox::new(1 << 20))).await;
    let (kept, asked) = (Group::new("kept").unwrap(), Group::new("asked").unwrap());
    for group in [&kept, &asked] {
        a.join(group, gotalk::relay::Member { peer: holder, meta: Bytes::from_static(b"{}") });
        for n in 0..3 {
            a.publish(group, note(&format!("{group}{n}")).keep(2)).unwrap();
        }
    }
    let texts = |notes: Vec<Note>| -> Vec<Bytes> { notes.into_iter().map(|n| n.payload).collect() };
    let expected = |group: &Group| {
        vec![Bytes::from(format!("\"{group}1\"")), Bytes::from(format!("\"{group}2\""))]
    };

    // Nothing awaited between the start and the join: the registration is local at once.
    let b = backend.make(settings()).await.bus;
    let newcomer = PeerId::from_random(rand::random());
    let _reachable = b.register(newcomer, gotalk::relay::Mailbox::new(1 << 20));
    b.join(&kept, gotalk::relay::Member { peer: newcomer, meta: Bytes::from_static(b"{}") });
    assert_eq!(texts(within("history", b.history(&kept)).await), expected(&kept));

    let c = backend.make(settings()).await.bus;
    assert_eq!(texts(within("history", c.history(&asked)).await), expected(&asked));
    for bus in [a, b, c] {
        bus.leave_cluster().await;
    }
}

/// A member whose connection closes leaves its groups on every instance.
pub async fn a_closed_connection_leaves_everywhere(backend: &Backend) {
    let (a, b) = (Instance::start(backend).await, Instance::start(backend).await);
    let g = Group::new("room").unwrap();
    let pa = a.peer().await;
    pa.join("room", "{}").await;
    eventually("seen on the other instance", WAIT, || b.relay.members(&g).len() == 1).await;
    pa.sock.close();
    eventually("gone on the other instance", WAIT, || b.relay.members(&g).is_empty()).await;
    eventually("gone here", WAIT, || a.relay.members(&g).is_empty()).await;
    assert!(b.relay.groups().is_empty());
    a.stop().await;
    b.stop().await;
}

/// An instance that leaves the cluster (its bus shut down): its peers are unknown elsewhere
/// and its members gone from every list. Cluster buses only.
pub async fn a_departed_instance_is_forgotten(backend: &Backend) {
    assert!(backend.clustered(), "a case for cluster buses");
    // Its goodbye makes the others forget it at once; should the goodbye be lost (a busy
    // machine, a connection closed before it left), the expiry does, so both are short here.
    let short = ClusterSettings::default()
        .heartbeat(Duration::from_millis(200))
        .presence_expiry(Duration::from_secs(1));
    let start = |settings: ClusterSettings| {
        Instance::start_with(backend, settings, Relay::new(), Config::default())
    };
    let (a, b) = (start(short.clone()).await, start(short).await);
    let g = Group::new("room").unwrap();
    let pa = a.peer().await;
    let pb = b.peer().await;
    pb.join("room", "{}").await;
    eventually("seen on a", WAIT, || a.relay.members(&g).len() == 1).await;
    pa.sock.relay(pb.id, "t", &1).await.expect("reachable before");
    b.cluster.as_ref().unwrap().shutdown().await;
    // Its peers' channels were unsubscribed before it left: their ids are unknown at once,
    // never a relay that waits out the relay timeout (1 s) on a connection going away.
    for n in 0..3 {
        let started = Instant::now();
        let err = within("relay", pa.sock.relay(pb.id, "t", &n)).await.unwrap_err();
        assert!(is_remote(&err, "unknown peer"), "relay {n} after the shutdown: {err:?}");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "unknown peer took {took:?}");
    }
    eventually("members gone on a", Duration::from_secs(4), || a.relay.members(&g).is_empty())
        .await;
    a.stop().await;
    b.stop().await;
}

/// The bus goes away for `down`: remote relays answer "relay unavailable" at once while
/// local ones work; after it comes back relays, groups and presence work again within a
/// bounded time, and the instances count a recovery.
pub async fn bus_outage(backend: &Backend, server: &mut dyn BusServer, down: Duration) {
    let (a, b) = (Instance::start(backend).await, Instance::start(backend).await);
    let no_retry = Config::default().max_retries(0);
    let (pa, pa2, pb) = (a.peer_with(no_retry.clone()).await, a.peer().await, b.peer().await);
    let mut local = pa2.inbox.topic("t");
    let mut remote = pb.inbox.topic("t");
    pa.sock.relay(pb.id, "t", &0).await.expect("before the outage");
    within("before", remote.recv()).await.unwrap();
    let mut state = a.relay.state();
    let recoveries = state.borrow().recoveries;

    let killed = Instant::now();
    server.kill();
    within("a sees the bus down", state.wait_for(|s| !s.up)).await.unwrap();
    for n in 1..=5 {
        let started = Instant::now();
        let err = within("relay", pa.sock.relay(pb.id, "t", &n)).await.unwrap_err();
        assert!(is_retry(&err, "relay unavailable"), "{err:?}");
        let took = started.elapsed();
        // At once: nothing waits on a bus that is down (the relay timeout is 1 s).
        assert!(took < Duration::from_millis(500), "unavailable took {took:?}");
        pa.sock.relay(pa2.id, "t", &n).await.expect("local relays work during the outage");
        assert_eq!(within("local", local.recv()).await.unwrap().json::<i32>().unwrap(), n);
    }
    tokio::time::sleep(down.saturating_sub(killed.elapsed())).await;
    server.restart().await;
    let back = Instant::now();
    // Backoff is at most 5 s, then a connect and a resubscribe.
    let bound = Duration::from_secs(8);
    for instance in [&a, &b] {
        let mut state = instance.relay.state();
        let ok = tokio::time::timeout(bound, state.wait_for(|s| s.up && s.recoveries > recoveries));
        ok.await.expect("up again, with a recovery").unwrap();
    }
    let after = back.elapsed();
    pa.sock.relay(pb.id, "t", &100).await.expect("relays work after the outage");
    assert_eq!(within("after", remote.recv()).await.unwrap().json::<i32>().unwrap(), 100);
    let g = Group::new("after").unwrap();
    pb.join("after", "{}").await;
    eventually("presence works after", WAIT, || a.relay.members(&g).len() == 1).await;
    let mut pb = pb;
    a.relay.publish(&g, note("back")).unwrap();
    assert_eq!(pb.note().await, "\"back\"");
    eprintln!("{}: outage {down:?}: up again {after:?} after the bus returned", backend.name);
    a.stop().await;
    b.stop().await;
}

/// Two instances whose buses nothing periodic touches (a relay waits 5 s for its answer), a
/// sender on the first (served by `relay`, never retrying) and a recipient on the second,
/// one relay delivered between them, then the bus server paused.
struct Paused {
    a: Instance,
    b: Instance,
    sender: Peer,
    recipient: Peer,
    got: gotalk::relay::Topic,
}

impl Paused {
    async fn start(backend: &Backend, server: &mut dyn BusServer, relay: Relay) -> Paused {
        let quiet = ClusterSettings::default()
            .heartbeat(Duration::from_secs(60))
            .probe(Duration::from_secs(60), Duration::from_secs(60))
            .relay_timeout(Duration::from_secs(5));
        let a = Instance::start_with(backend, quiet.clone(), relay, Config::default()).await;
        let b = Instance::start_with(backend, quiet, Relay::new(), Config::default()).await;
        let sender = a.peer_with(Config::default().max_retries(0)).await;
        let recipient = b.peer().await;
        let mut got = recipient.inbox.topic("t");
        sender.sock.relay(recipient.id, "t", &-1).await.expect("before the pause");
        within("before", got.recv()).await.unwrap();
        server.pause();
        Paused { a, b, sender, recipient, got }
    }

    /// A relay of `body` left waiting in a task of its own.
    fn send<T: serde::Serialize + Send + Sync + 'static>(
        &self,
        body: T,
    ) -> JoinHandle<Result<(), Error>> {
        let (sock, to) = (self.sender.sock.clone(), self.recipient.id);
        tokio::spawn(async move { sock.relay(to, "t", &body).await })
    }

    /// A relay of `body`, refused at once as past a limit.
    async fn refused<T: serde::Serialize>(&self, body: T) {
        let started = Instant::now();
        let relay = self.sender.sock.relay(self.recipient.id, "t", &body);
        let err = within("one past the limit", relay).await.unwrap_err();
        assert!(is_retry(&err, "relay unavailable"), "{err:?}");
        // At once: far below the 5 s the waiting ones may wait, with room for a busy machine.
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }

    /// Resumes the bus: every waiting relay is delivered, each once; returns their bodies in
    /// the order they came (the tasks sent in whatever order the runtime polled them).
    async fn resume<T: serde::de::DeserializeOwned>(
        mut self,
        server: &mut dyn BusServer,
        waiting: Vec<JoinHandle<Result<(), Error>>>,
    ) -> Vec<T> {
        server.resume();
        let count = waiting.len();
        for w in waiting {
            within("a waiting relay", w).await.unwrap().expect("delivered after the pause");
        }
        let mut delivered = Vec::new();
        for _ in 0..count {
            delivered.push(within("delivery", self.got.recv()).await.unwrap().json().unwrap());
        }
        self.a.stop().await;
        self.b.stop().await;
        delivered
    }
}

/// Waits a moment, then checks that every relay of `waiting` still waits for the bus.
async fn still_waiting(waiting: &mut [JoinHandle<Result<(), Error>>]) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ended = Vec::new();
    for w in waiting.iter_mut().filter(|w| w.is_finished()) {
        ended.push(w.await.unwrap());
    }
    assert!(ended.is_empty(), "the relays at the limit wait for the bus: {ended:?} ended");
}

/// With the bus paused, a sender's relays to other instances wait: the first
/// `max_in_flight` are pending, the next is "relay unavailable" at once, and the sender's
/// other requests are answered meanwhile (its read loop does not wait on the bus).
pub async fn in_flight_edge(backend: &Backend, server: &mut dyn BusServer) {
    const N: usize = 4;
    let paused = Paused::start(backend, server, Relay::new().max_in_flight(N)).await;
    let mut waiting: Vec<_> = (0..N).map(|n| paused.send(n)).collect();
    still_waiting(&mut waiting).await;
    paused.refused(N).await;
    let started = Instant::now();
    let sender = &paused.sender;
    assert_eq!(within("whoami", sender.sock.whoami()).await.unwrap(), sender.id);
    assert!(started.elapsed() < Duration::from_secs(1), "the read loop does not wait");
    let mut delivered: Vec<usize> = paused.resume(server, waiting).await;
    delivered.sort_unstable();
    assert_eq!(delivered, (0..N).collect::<Vec<_>>());
}

/// What a relay counts against `max_in_flight_bytes` besides its body and topic: the
/// delivery's JSON around them, `{"from":"<36>","topic":"…","body":…}`.
const DELIVERY_FRAME: usize = 66;

/// With the bus paused, a sender's relays to other instances hold their bytes: relays of
/// exactly `max_in_flight_bytes` in all wait, and a relay one byte past it is "relay
/// unavailable" at once, as is any relay once the limit is reached.
pub async fn in_flight_bytes_edge(backend: &Backend, server: &mut dyn BusServer) {
    const N: usize = 3;
    // A JSON string of BODY bytes, quotes included, on the topic `t`.
    const BODY: usize = 1000;
    let body = |len: usize| "x".repeat(len - 2);
    let each = DELIVERY_FRAME + 1 + BODY;
    let relay = Relay::new().max_in_flight_bytes(N * each);
    let paused = Paused::start(backend, server, relay).await;
    let mut waiting: Vec<_> = (0..N - 1).map(|_| paused.send(body(BODY))).collect();
    still_waiting(&mut waiting).await;
    paused.refused(body(BODY + 1)).await;
    waiting.push(paused.send(body(BODY)));
    still_waiting(&mut waiting).await;
    paused.refused(1).await;
    let delivered: Vec<String> = paused.resume(server, waiting).await;
    assert_eq!(delivered, vec![body(BODY); N]);
}

/// An instance whose relay keeps the sessions of peers that go away.
async fn keeping(backend: &Backend) -> Instance {
    let relay = Relay::new().resume_grace(Duration::from_secs(30));
    Instance::start_with(backend, ClusterSettings::default(), relay, Config::default()).await
}

/// A peer on `a` goes away; a peer on `b` sends to its id meanwhile, and goes on sending while
/// the peer reconnects to `c` (`b` again for one case) and resumes its session there. The
/// session keeps its id and its group, and every message arrives exactly once, in the order
/// sent, those of the burst sent during the handover included.
pub async fn resume_across_instances(backend: &Backend) {
    let (a, b, c) = (keeping(backend).await, keeping(backend).await, keeping(backend).await);
    let g = Group::new("room").unwrap();
    let away = a.peer().await;
    away.join("room", "{\"name\":\"ada\"}").await;
    let token = {
        let mut sessions = away.inbox.sessions();
        let token = *within("a session token", sessions.wait_for(Option::is_some)).await.unwrap();
        token.expect("a token")
    };
    eventually("seen on c", WAIT, || c.relay.members(&g).len() == 1).await;
    let sender = b.peer_with(Config::default().max_retries(0)).await;
    away.sock.close();
    eventually("the session held on a", WAIT, || a.relay.detached() == 1).await;

    const AWAY: usize = 20;
    const BURST: usize = 300;
    for i in 0..AWAY {
        within("relay", sender.sock.relay(away.id, "seq", &i)).await.expect("held on a");
    }
    let back = c.peer().await;
    let mut seq = back.inbox.topic("seq");
    let burst = {
        let sock = sender.sock.clone();
        let to = away.id;
        tokio::spawn(async move {
            stream::iter(AWAY..AWAY + BURST)
                .map(|i| {
                    let sock = sock.clone();
                    async move { sock.relay(to, "seq", &i).await }
                })
                .buffered(16)
                .collect::<Vec<_>>()
                .await
        })
    };
    let resumed = within("resume", back.sock.resume(&token)).await.expect("resumed on c");
    assert_eq!(resumed, away.id, "the same id");
    let results = within("the burst", burst).await.unwrap();
    let failed: Vec<_> = results.iter().enumerate().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "every message of the burst delivered: {failed:?}");

    let mut got = Vec::new();
    while got.len() < AWAY + BURST {
        let message = within("every message", seq.recv()).await.expect("the topic is open");
        got.push(message.json::<usize>().unwrap());
    }
    assert_eq!(got, (0..AWAY + BURST).collect::<Vec<_>>(), "each once, in the order sent");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(seq.try_recv().is_err(), "nothing twice");

    let one = |relay: &Relay| {
        let members = relay.members(&g);
        members.len() == 1 && members[0].peer == away.id && members[0].meta == "{\"name\":\"ada\"}"
    };
    eventually("still in its group, once, everywhere", WAIT, || {
        one(&a.relay) && one(&b.relay) && one(&c.relay)
    })
    .await;
    assert_eq!(a.relay.detached(), 0, "no longer held on a");
    // Reachable at its new place from everywhere, the old instance too.
    let from_a = a.peer().await;
    within("relay", from_a.sock.relay(away.id, "seq", &999)).await.expect("reachable");
    let message = within("the last", seq.recv()).await.unwrap();
    assert_eq!(message.json::<usize>().unwrap(), 999);
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

/// A session held on one instance is not taken with a wrong secret from another: refused
/// with the one text, the session still held for its owner, who then resumes it.
pub async fn resume_with_a_wrong_secret_is_refused(backend: &Backend) {
    let (a, b) = (keeping(backend).await, keeping(backend).await);
    let away = a.peer().await;
    let token = {
        let mut sessions = away.inbox.sessions();
        let token = *within("a session token", sessions.wait_for(Option::is_some)).await.unwrap();
        token.expect("a token")
    };
    away.sock.close();
    eventually("the session held on a", WAIT, || a.relay.detached() == 1).await;
    let mut wrong = *token.secret.as_bytes();
    wrong[0] ^= 1;
    let wrong =
        gotalk::relay::Token { id: token.id, secret: gotalk::relay::Secret::from_random(wrong) };
    let back = b.peer().await;
    let err = within("resume", back.sock.resume(&wrong)).await.unwrap_err();
    assert!(is_remote(&err, "resume refused"), "{err:?}");
    assert_eq!(within("whoami", back.sock.whoami()).await.unwrap(), back.id, "keeps its id");
    assert_eq!(a.relay.detached(), 1, "still held");
    let again = b.peer().await;
    assert_eq!(within("resume", again.sock.resume(&token)).await.unwrap(), away.id);
    a.stop().await;
    b.stop().await;
}
