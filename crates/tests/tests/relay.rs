//! The relay over real sockets: 100 peers on WebSocket, TCP and TLS messaging each other, and
//! each fault the original signalling server had (unknown peers, oversize and malformed
//! messages, a stalled recipient, reconnects, refusals).

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::web::WebServer;
use common::{notification, request, serve, tls_configs, within, WirePeer};
use gotalk::protocol::relay::PeerId;
use gotalk::protocol::Frame;
use gotalk::relay::{Inbox, Relay, Undelivered};
use gotalk::{CloseReason, Config, Error, Handlers, Sock};
use serde::{Deserialize, Serialize};

/// A client of the relay: its connection and what it receives.
struct Peer {
    sock: Sock,
    inbox: Inbox,
    id: PeerId,
}

async fn peer_with(
    connect: impl std::future::Future<Output = Result<Sock, Error>>,
    inbox: Inbox,
) -> Peer {
    let sock = within("connect", connect).await.expect("connect");
    let id = within("the relay id", inbox.id()).await;
    Peer { sock, inbox, id }
}

fn inbox_handlers() -> (Inbox, Arc<Handlers>) {
    let inbox = Inbox::new();
    let mut handlers = Handlers::new();
    inbox.install(&mut handlers);
    (inbox, Arc::new(handlers))
}

async fn tcp_peer(addr: SocketAddr) -> Peer {
    tcp_peer_with(addr, Config::default()).await
}

async fn tcp_peer_with(addr: SocketAddr, config: Config) -> Peer {
    let (inbox, handlers) = inbox_handlers();
    peer_with(gotalk::tcp::connect(addr, handlers, config), inbox).await
}

/// A server with the relay on, and the relay's handle to count its peers.
fn relay_handlers(relay: Relay) -> Handlers {
    let mut handlers = Handlers::new();
    handlers.relay(relay);
    handlers
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Eq, Hash, Clone, Copy)]
struct Body {
    sender: usize,
    seq: usize,
}

const TOPICS: [&str; 3] = ["offer", "answer", "candidate"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_peers_on_every_transport_lose_and_duplicate_nothing() {
    let relay = Relay::new();
    let handlers = relay_handlers(relay.clone());
    let web = WebServer::start(handlers.clone(), Config::default(), |g| g).await;
    let (server_tls, client_tls) = tls_configs();
    let tls_server =
        serve(gotalk::tcp::Server::new(Arc::new(handlers), Config::default()).tls(server_tls))
            .await;

    const N: usize = 100;
    let mut peers = Vec::new();
    let mut receivers = Vec::new();
    for i in 0..N {
        let (inbox, h) = inbox_handlers();
        let topics: Vec<_> = TOPICS.iter().map(|t| inbox.topic(t)).collect();
        receivers.push(topics);
        let peer = match i % 3 {
            0 => {
                let url = web.url("");
                peer_with(gotalk::ws::connect(&url, h, Config::default()), inbox).await
            }
            1 => peer_with(gotalk::tcp::connect(web.tcp, h, Config::default()), inbox).await,
            _ => {
                let connect = gotalk::tcp::connect_tls(
                    tls_server.addr,
                    "localhost",
                    client_tls.clone(),
                    h,
                    Config::default(),
                );
                peer_with(connect, inbox).await
            }
        };
        peers.push(peer);
    }
    assert_eq!(relay.peers(), N, "one registry entry per live connection");
    let ids: Vec<PeerId> = peers.iter().map(|p| p.id).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), N, "every id is different");

    // Every peer sends one message to every other peer, half acknowledged and half fire and
    // forget, on a topic chosen by the pair.
    let topic_of = |from: usize, to: usize| TOPICS[(from + to) % TOPICS.len()];
    let mut sending = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        let sock = peer.sock.clone();
        let ids = ids.clone();
        sending.push(tokio::spawn(async move {
            let sends = (0..N).filter(|&j| j != i).map(|j| {
                let (sock, to) = (sock.clone(), ids[j]);
                let body = Body { sender: i, seq: j };
                async move {
                    if (i + j) % 2 == 0 {
                        sock.relay(to, topic_of(i, j), &body).await
                    } else {
                        sock.relay_notify(to, topic_of(i, j), &body).await
                    }
                }
            });
            for outcome in futures_util::future::join_all(sends).await {
                outcome.expect("a send to a live peer");
            }
        }));
    }
    for task in sending {
        within("sending", task).await.unwrap();
    }

    let mut expected_per_topic: HashMap<&str, usize> = HashMap::new();
    for i in 0..N {
        for j in (0..N).filter(|&j| j != i) {
            *expected_per_topic.entry(topic_of(i, j)).or_default() += 1;
        }
    }
    let mut got_per_topic: HashMap<&str, usize> = HashMap::new();
    let mut seen = HashSet::new();
    for (j, topics) in receivers.iter_mut().enumerate() {
        let mut expected: HashMap<&str, usize> = HashMap::new();
        for i in (0..N).filter(|&i| i != j) {
            *expected.entry(topic_of(i, j)).or_default() += 1;
        }
        for (t, rx) in TOPICS.iter().zip(topics.iter_mut()) {
            for _ in 0..expected.get(t).copied().unwrap_or(0) {
                let message = within("a relayed message", rx.recv()).await.unwrap();
                let body: Body = message.json().unwrap();
                assert_eq!(
                    message.from, ids[body.sender],
                    "the sender's id as the server knows it"
                );
                assert_eq!(body.seq, j, "delivered to its addressee");
                assert_eq!(message.topic, *t);
                assert!(seen.insert(body), "{body:?} delivered twice");
                *got_per_topic.entry(t).or_default() += 1;
            }
        }
    }
    // Nothing more is on the way: the senders' acknowledgements and notifications are all in.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for topics in &mut receivers {
        for rx in topics.iter_mut() {
            assert!(rx.try_recv().is_err(), "an extra message arrived");
        }
    }
    assert_eq!(got_per_topic, expected_per_topic);
    assert_eq!(seen.len(), N * (N - 1));
    assert!(peers.iter().all(|p| p.inbox.dropped() == 0));

    for peer in &peers {
        peer.sock.close();
    }
    wait_for("every id unregistered", || relay.peers() == 0).await;
    tls_server.stop().await;
    web.stop().await;
}

#[tokio::test]
async fn the_id_comes_first_to_our_clients_and_whoami_answers_it() {
    let relay = Relay::new();
    let server = common::start(relay_handlers(relay.clone()), Config::default()).await;
    let mut wire = WirePeer::connect_ours(server.addr).await;
    let Frame::Notification { name, payload } = wire.frame().await else {
        panic!("the first message is not a notification");
    };
    assert_eq!(name.as_str(), "$id");
    let id: PeerId = serde_json::from_slice(&payload).unwrap();
    wire.send(&request(b"0001", "whoami", b"")).await;
    let Frame::SingleResult { payload, .. } = wire.frame().await else { panic!("no result") };
    assert_eq!(serde_json::from_slice::<PeerId>(&payload).unwrap(), id);

    let peer = tcp_peer(server.addr).await;
    assert_eq!(within("whoami", peer.sock.whoami()).await.unwrap(), peer.id);
    assert_eq!(relay.peers(), 2);

    // A client that did not say the hello (Go's) is not told `$id`, which its catch-all
    // handler would get; it has an id all the same, and whoami answers it.
    let mut go = WirePeer::connect(server.addr).await;
    go.send(&request(b"0001", "whoami", b"")).await;
    let Frame::SingleResult { payload, .. } = go.frame().await else { panic!("not a result") };
    let id: PeerId = serde_json::from_slice(&payload).unwrap();
    assert_ne!(id, peer.id);
    assert_eq!(relay.peers(), 3);
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_peer_is_an_error_and_a_notice() {
    let server = common::start(relay_handlers(Relay::new()), Config::default()).await;
    let peer = tcp_peer(server.addr).await;
    let mut notices = peer.inbox.undelivered();
    let nobody = PeerId::from_random([9; 16]);
    let err = peer.sock.relay(nobody, "chat", "hi").await.unwrap_err();
    assert!(matches!(&err, Error::Remote(text) if text == "unknown peer"), "{err:?}");

    peer.sock.relay_notify(nobody, "chat", "hi").await.unwrap();
    let notice = within("the notice", notices.recv()).await.unwrap();
    assert_eq!(
        notice,
        Undelivered { to: Some(nobody), topic: Some("chat".into()), error: "unknown peer".into() }
    );
    server.stop().await;
}

#[tokio::test]
async fn sending_to_yourself_arrives_from_yourself() {
    let server = common::start(relay_handlers(Relay::new()), Config::default()).await;
    let peer = tcp_peer(server.addr).await;
    let mut notes = peer.inbox.topic("notes");
    peer.sock.relay(peer.id, "notes", &serde_json::json!({"remember": "milk"})).await.unwrap();
    let message = within("the message", notes.recv()).await.unwrap();
    assert_eq!(message.from, peer.id);
    assert_eq!(&message.body[..], br#"{"remember":"milk"}"#);
    server.stop().await;
}

/// A body of exactly `json_len` bytes of JSON text: a string.
fn body_of(json_len: usize) -> String {
    "x".repeat(json_len - 2)
}

#[tokio::test]
async fn the_default_body_limit_holds_at_its_edge() {
    let server = common::start(relay_handlers(Relay::new()), Config::default()).await;
    let peer = tcp_peer(server.addr).await;
    let mut big = peer.inbox.topic("big");
    let limit = gotalk::relay::DEFAULT_MAX_BODY;
    assert_eq!(limit, 64 * 1024);
    peer.sock.relay(peer.id, "big", &body_of(limit)).await.unwrap();
    let message = within("the largest body", big.recv()).await.unwrap();
    assert_eq!(message.body.len(), limit);

    let err = peer.sock.relay(peer.id, "big", &body_of(limit + 1)).await.unwrap_err();
    let expected = format!("too large: the body is {} bytes, the limit is {limit}", limit + 1);
    assert!(matches!(&err, Error::Remote(text) if *text == expected), "{err:?}");
    // Far past the limit, and fire and forget: a notice, and the connection carries on.
    let mut notices = peer.inbox.undelivered();
    peer.sock.relay_notify(peer.id, "big", &body_of(10 * limit)).await.unwrap();
    let notice = within("the notice", notices.recv()).await.unwrap();
    assert!(notice.error.starts_with("too large"), "{notice:?}");
    peer.sock.relay(peer.id, "big", "small").await.unwrap();
    assert_eq!(within("a small one", big.recv()).await.unwrap().json::<String>().unwrap(), "small");
    server.stop().await;
}

#[tokio::test]
async fn the_body_limit_setter_holds_at_its_edge() {
    let relay = Relay::new().max_body(1000);
    let server = common::start(relay_handlers(relay), Config::default()).await;
    let peer = tcp_peer(server.addr).await;
    let mut t = peer.inbox.topic("t");
    peer.sock.relay(peer.id, "t", &body_of(1000)).await.unwrap();
    assert_eq!(within("at the limit", t.recv()).await.unwrap().body.len(), 1000);
    let err = peer.sock.relay(peer.id, "t", &body_of(1001)).await.unwrap_err();
    assert!(matches!(&err, Error::Remote(text) if text.starts_with("too large")), "{err:?}");
    server.stop().await;
}

#[tokio::test]
async fn malformed_relay_messages_hurt_nobody_else() {
    let relay = Relay::new();
    let server = common::start(relay_handlers(relay.clone()), Config::default()).await;
    let alice = tcp_peer(server.addr).await;
    let bob = tcp_peer(server.addr).await;
    let mut bob_chat = bob.inbox.topic("chat");

    // A wire peer sends short and malformed envelopes, as request and as notification.
    let mut wire = WirePeer::connect_ours(server.addr).await;
    let Frame::Notification { payload, .. } = wire.frame().await else { panic!("no id") };
    let wire_id: PeerId = serde_json::from_slice(&payload).unwrap();
    let bob_id = bob.id.to_string();
    let bad: [&[u8]; 6] = [
        b"",
        b"x",
        b"{\"to\":\"",
        bob_id.as_bytes(),
        br#"{"to":"not-an-id","topic":"chat","body":1}"#,
        br#"{"to":"00000000-0000-4000-8000-000000000000","topic":"","body":1}"#,
    ];
    for (n, payload) in bad.iter().enumerate() {
        let id = [b'0', b'0', b'0', b'0' + n as u8];
        wire.send(&request(&id, "$relay", payload)).await;
        let frame = wire.frame().await;
        let Frame::ErrorResult { payload: text, .. } = &frame else {
            panic!("{payload:?} got {frame:?}")
        };
        assert!(text.starts_with(b"bad header: "), "{}", String::from_utf8_lossy(text));
        wire.send(&notification("$relay", payload)).await;
        let Frame::Notification { name, payload: notice } = wire.frame().await else {
            panic!("no notice")
        };
        assert_eq!(name.as_str(), "$undelivered");
        let notice: Undelivered = serde_json::from_slice(&notice).unwrap();
        assert!(notice.error.starts_with("bad header: "), "{notice:?}");
    }
    // A frame that is not gotalk at all closes the wire peer's connection, and only it.
    wire.write(b"r0001zz").await;
    let rest = wire.read_to_end().await;
    assert!(rest.ends_with(b"f00000002"), "{}", String::from_utf8_lossy(&rest));

    // Everyone else keeps their ids and their messages flow; the wire peer's id is gone.
    alice.sock.relay(bob.id, "chat", "still here").await.unwrap();
    let message = within("bob's message", bob_chat.recv()).await.unwrap();
    assert_eq!((message.from, message.json::<String>().unwrap()), (alice.id, "still here".into()));
    assert_eq!(alice.sock.whoami().await.unwrap(), alice.id);
    assert_eq!(bob.sock.whoami().await.unwrap(), bob.id);
    wait_for("the wire peer unregistered", || relay.peers() == 2).await;
    let err = alice.sock.relay(wire_id, "chat", "gone?").await.unwrap_err();
    assert!(matches!(&err, Error::Remote(text) if text == "unknown peer"), "{err:?}");
    server.stop().await;
}

#[tokio::test]
async fn topics_with_json_escapes_reach_the_recipient_as_sent() {
    let web = WebServer::start(relay_handlers(Relay::new()), Config::default(), |g| g).await;
    let alice = tcp_peer(web.tcp).await;
    let (inbox, h) = inbox_handlers();
    let bob = peer_with(gotalk::ws::connect(&web.url(""), h, Config::default()), inbox).await;
    let at_limit = "\n".repeat(gotalk::relay::MAX_TOPIC_LEN);
    let topics = [
        "say \"hi\"",
        "C:\\dir\\",
        "two\nlines",
        "a\tb",
        "\r\u{8}\u{c}\0\u{1b}[2J\u{7f}",
        "é 😀 \u{2028}",
        at_limit.as_str(),
    ];
    for topic in topics {
        let mut rx = bob.inbox.topic(topic);
        alice.sock.relay(bob.id, topic, &topic).await.unwrap_or_else(|e| panic!("{topic:?}: {e}"));
        let message = within("the message", rx.recv()).await.unwrap();
        assert_eq!(message.topic.as_bytes(), topic.as_bytes());
        assert_eq!((message.from, message.json::<String>().unwrap()), (alice.id, topic.to_owned()));
        // Fire and forget too.
        alice.sock.relay_notify(bob.id, topic, &"again").await.unwrap();
        let message = within("the notification", rx.recv()).await.unwrap();
        assert_eq!((message.topic.as_str(), &message.body[..]), (topic, &b"\"again\""[..]));
    }

    // The limit counts the decoded topic: 255 escaped characters pass, 256 do not.
    let mut wire = WirePeer::connect_ours(web.tcp).await;
    let Frame::Notification { .. } = wire.frame().await else { panic!("no id") };
    let mut t = bob.inbox.topic(&"t".repeat(255));
    for (n, expected) in [(255, None), (256, Some("bad header: the topic is 256 bytes"))] {
        let topic = "\\u0074".repeat(n);
        let envelope = format!(r#"{{"to":"{}","topic":"{topic}","body":{n}}}"#, bob.id);
        wire.send(&request(b"0001", "$relay", envelope.as_bytes())).await;
        match (wire.frame().await, expected) {
            (Frame::SingleResult { .. }, None) => {
                let message = within("the escaped topic", t.recv()).await.unwrap();
                assert_eq!(message.json::<usize>().unwrap(), 255);
            }
            (Frame::ErrorResult { payload, .. }, Some(text)) => {
                assert!(payload.starts_with(text.as_bytes()), "{payload:?}");
            }
            (frame, _) => panic!("{n}: {frame:?}"),
        }
    }
    web.stop().await;
}

#[tokio::test]
async fn a_reconnect_gets_a_new_id_and_the_old_one_is_unroutable() {
    let relay = Relay::new();
    let server = common::start(relay_handlers(relay.clone()), Config::default()).await;
    let other = tcp_peer(server.addr).await;

    let (inbox, handlers) = inbox_handlers();
    let seen = Arc::new(Mutex::new(Vec::new()));
    inbox.on_id({
        let seen = seen.clone();
        move |id| seen.lock().unwrap().push(id)
    });
    let mut ids = inbox.ids();
    let first = peer_with(
        gotalk::tcp::connect(server.addr, handlers.clone(), Config::default()),
        inbox.clone(),
    )
    .await;
    first.sock.close();
    first.sock.closed().await;
    ids.borrow_and_update();
    let second =
        within("reconnect", gotalk::tcp::connect(server.addr, handlers, Config::default()))
            .await
            .unwrap();
    within("a new id", ids.changed()).await.unwrap();
    let new_id = inbox.id().await;
    assert_ne!(new_id, first.id);
    assert_eq!(*seen.lock().unwrap(), vec![first.id, new_id], "on_id saw both ids");
    assert_eq!(second.whoami().await.unwrap(), new_id);

    let err = other.sock.relay(first.id, "chat", "old").await.unwrap_err();
    assert!(matches!(&err, Error::Remote(text) if text == "unknown peer"), "{err:?}");
    let mut chat = inbox.topic("chat");
    other.sock.relay(new_id, "chat", "new").await.unwrap();
    assert_eq!(within("to the new id", chat.recv()).await.unwrap().from, other.id);
    wait_for("one entry per live connection", || relay.peers() == 2).await;
    server.stop().await;
}

#[tokio::test]
async fn a_refusal_looks_like_an_unknown_peer() {
    // Peers may send to each other only in one direction: to ids in the allowed set.
    let allowed: Arc<Mutex<HashSet<PeerId>>> = Arc::default();
    let relay = Relay::new().authorize({
        let allowed = allowed.clone();
        move |_sender, to| allowed.lock().unwrap().contains(&to)
    });
    let server = common::start(relay_handlers(relay), Config::default()).await;
    let open = tcp_peer(server.addr).await;
    let closed = tcp_peer(server.addr).await;
    allowed.lock().unwrap().insert(open.id);
    let mut chat = open.inbox.topic("chat");

    closed.sock.relay(open.id, "chat", "allowed").await.unwrap();
    assert_eq!(within("allowed", chat.recv()).await.unwrap().from, closed.id);

    let refused = open.sock.relay(closed.id, "chat", "refused").await.unwrap_err();
    let unknown =
        open.sock.relay(PeerId::from_random([1; 16]), "chat", "nobody").await.unwrap_err();
    assert_eq!(refused.to_string(), unknown.to_string());
    assert_eq!(refused.to_string(), "unknown peer");
    let mut notices = open.inbox.undelivered();
    open.sock.relay_notify(closed.id, "chat", "refused").await.unwrap();
    let notice = within("the notice", notices.recv()).await.unwrap();
    assert_eq!(notice.error, "unknown peer");
    server.stop().await;
}

/// Where the id's JSON starts in what a client of ours first reads: `01`, the hello, then
/// `n003$id` and an 8-digit size.
const ID_AT: usize = 2 + common::HELLO.len() + 1 + 3 + 3 + 8;

/// A peer that completes the handshake, reads its id, then never reads again, with a small
/// receive buffer so the server's writes back up quickly.
async fn stalled_peer(addr: SocketAddr) -> (tokio::net::TcpStream, PeerId) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(b"01").await.unwrap();
    stream.write_all(common::HELLO).await.unwrap();
    // `01`, the hello, then `n003$id` + 8-digit size + `"<36>"`.
    let mut head = vec![0u8; ID_AT + 38];
    within("the id", stream.read_exact(&mut head)).await.unwrap();
    let id: PeerId = serde_json::from_slice(&head[ID_AT..]).unwrap();
    (stream, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_recipient_never_blocks_its_senders_and_is_disconnected() {
    let stall = Duration::from_secs(3);
    let relay = Relay::new().queue_bytes(64 * 1024).stall_timeout(stall);
    let reasons: Arc<Mutex<Vec<CloseReason>>> = Arc::default();
    let mut handlers = relay_handlers(relay.clone());
    handlers.on_close({
        let reasons = reasons.clone();
        move |_sock, reason| reasons.lock().unwrap().push(reason.clone())
    });
    let config = Config::default().send_queue_bytes(16 * 1024);
    let server = common::start(handlers, config).await;

    let (stalled_stream, stalled) = stalled_peer(server.addr).await;
    let healthy = tcp_peer(server.addr).await;
    let mut healthy_chat = healthy.inbox.topic("chat");
    // No retries: the test sees each "queue full" itself.
    let no_retry = Config::default().max_retries(0);
    let sender = tcp_peer_with(server.addr, no_retry).await;

    // Fill the stalled peer's socket, send queue and mailbox until the relay says it is full.
    let chunk = "y".repeat(8 * 1024);
    let mut queued = 0;
    let full = loop {
        match sender.sock.relay(stalled, "chat", &chunk).await {
            Ok(()) => queued += 1,
            Err(e) => break e,
        }
        assert!(queued < 5000, "the stalled peer's queue never filled");
    };
    assert!(
        matches!(&full, Error::Retry { message, .. } if message == "recipient's queue is full"),
        "{full:?}"
    );
    // Meanwhile the sender's other messages flow, without waiting.
    for n in 0..50 {
        within("a send to a healthy peer", sender.sock.relay(healthy.id, "chat", &n))
            .await
            .unwrap();
        let message = within("a healthy delivery", healthy_chat.recv()).await.unwrap();
        assert_eq!(message.json::<i32>().unwrap(), n);
        let again = sender.sock.relay(stalled, "chat", &chunk).await.unwrap_err();
        assert!(matches!(again, Error::Retry { .. }), "{again:?}");
    }
    assert_eq!(relay.peers(), 3, "the stalled peer is still connected while the others flow");

    // The stalled peer goes, and its id with it.
    wait_for("the stalled peer disconnected", || {
        reasons.lock().unwrap().contains(&CloseReason::RelayStalled(stall))
    })
    .await;
    let err = sender.sock.relay(stalled, "chat", "hello?").await.unwrap_err();
    assert!(matches!(&err, Error::Remote(text) if text == "unknown peer"), "{err:?}");
    assert_eq!(relay.peers(), 2);
    sender.sock.relay(healthy.id, "chat", &-1).await.unwrap();
    assert_eq!(within("after", healthy_chat.recv()).await.unwrap().json::<i32>().unwrap(), -1);
    // The server's last flush to the peer that never reads would wait out its deadline.
    drop(stalled_stream);
    server.stop().await;
}

#[tokio::test]
async fn a_full_queue_is_an_error_for_a_peer_without_retry_results() {
    let relay = Relay::new().queue_bytes(1);
    let config = Config::default().peer_understands_retry(false).send_queue_bytes(1);
    let server = common::start(relay_handlers(relay), config).await;
    let (stalled_stream, stalled) = stalled_peer(server.addr).await;
    let sender = tcp_peer(server.addr).await;
    let chunk = "z".repeat(32 * 1024);
    let err = loop {
        if let Err(e) = sender.sock.relay(stalled, "t", &chunk).await {
            break e;
        }
    };
    assert!(matches!(&err, Error::Remote(t) if t == "recipient's queue is full"), "{err:?}");
    drop(stalled_stream);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_recipient_is_disconnected_exactly_at_the_stall_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // The default 10 s, in memory under a paused clock, without heartbeats or probes.
    let relay = Relay::new();
    let mut config = Config::default().heartbeat_interval(None).send_queue_bytes(1024);
    let off = gotalk::LivenessConfig { interval: None, max_unacked: 0, ..config.liveness_config() };
    config = config.liveness(off).unwrap();
    let (closes, mut closed) = tokio::sync::mpsc::unbounded_channel();
    let mut handlers = relay_handlers(relay.clone());
    handlers.on_close(move |_sock, reason| {
        let _ = closes.send((tokio::time::Instant::now(), reason.clone()));
    });
    let handlers = Arc::new(handlers);

    // The recipient: a pipe of 64 bytes whose far end reads its id and then nothing more.
    let (ours, mut theirs) = tokio::io::duplex(64);
    theirs.write_all(b"01").await.unwrap();
    theirs.write_all(common::HELLO).await.unwrap();
    let (r, w) = gotalk::transport::io(ours);
    let info = gotalk::ConnInfo::new(gotalk::TransportKind::Memory, None, None);
    let recipient = Sock::start(r, w, handlers.clone(), Arc::new(config.clone()), info).await;
    let recipient = recipient.unwrap();
    // `01`, the hello, then `n003$id` + 8-digit size + `"<36>"`.
    let mut head = vec![0u8; ID_AT + 38];
    theirs.read_exact(&mut head).await.unwrap();
    let stalled: PeerId = serde_json::from_slice(&head[ID_AT..]).unwrap();

    // The sender, connected in memory too.
    let (inbox, inbox_handlers) = inbox_handlers();
    let (_server_side, sender) =
        Sock::pipe((handlers, Arc::new(config.clone())), (inbox_handlers, Arc::new(config)))
            .await
            .unwrap();
    let _ = inbox.id().await;
    // The first delivery fills the recipient's send queue and its write stalls; the second
    // then waits to get in, and the stall clock starts.
    let body = "y".repeat(8 * 1024);
    sender.relay(stalled, "t", &body).await.unwrap();
    sender.relay(stalled, "t", &body).await.unwrap();
    let started = tokio::time::Instant::now();

    tokio::time::sleep_until(started + Duration::from_secs(10) - Duration::from_millis(1)).await;
    assert!(!recipient.is_closed(), "gone before the stall timeout");
    assert_eq!(relay.peers(), 2);
    let (at, reason) =
        tokio::time::timeout(Duration::from_secs(60), closed.recv()).await.unwrap().unwrap();
    assert_eq!(reason, CloseReason::RelayStalled(Duration::from_secs(10)));
    let waited = at - started;
    assert!(waited >= Duration::from_secs(10), "{waited:?}");
    assert!(waited <= Duration::from_secs(10) + Duration::from_millis(1), "{waited:?}");
    // Its id is free: the sender is told the peer is unknown.
    let err = sender.relay(stalled, "t", "hello?").await.unwrap_err();
    assert!(matches!(&err, Error::Remote(text) if text == "unknown peer"), "{err:?}");
}

#[tokio::test]
async fn a_topic_keeps_exactly_its_queue_and_counts_what_it_drops() {
    let server = common::start(relay_handlers(Relay::new()), Config::default()).await;
    let peer = tcp_peer(server.addr).await;
    peer.inbox.queue(3);
    let mut t = peer.inbox.topic("t");
    let mut sync = peer.inbox.topic("sync");
    // Deliveries to one connection are handled in order: once `sync` arrives, so have the
    // ones sent before it.
    for n in 0..3 {
        peer.sock.relay(peer.id, "t", &n).await.unwrap();
    }
    peer.sock.relay(peer.id, "sync", &0).await.unwrap();
    within("sync", sync.recv()).await.unwrap();
    assert_eq!(peer.inbox.dropped(), 0, "three unread fit a queue of three");
    peer.sock.relay(peer.id, "t", &3).await.unwrap();
    peer.sock.relay(peer.id, "sync", &1).await.unwrap();
    within("sync", sync.recv()).await.unwrap();
    assert_eq!(peer.inbox.dropped(), 1, "the fourth is one past");
    for n in 0..3 {
        assert_eq!(within("kept", t.recv()).await.unwrap().json::<i32>().unwrap(), n);
    }
    assert!(t.try_recv().is_err(), "nothing past the queue was kept");
    server.stop().await;
}

#[tokio::test]
async fn the_topic_limit_holds_at_its_edge() {
    let server = common::start(relay_handlers(Relay::new()), Config::default()).await;
    let peer = tcp_peer(server.addr).await;
    let at = "t".repeat(255);
    let mut topic = peer.inbox.topic(&at);
    peer.sock.relay(peer.id, &at, &1).await.unwrap();
    assert_eq!(within("255 bytes", topic.recv()).await.unwrap().topic, at);
    let err = peer.sock.relay(peer.id, &"t".repeat(256), &1).await.unwrap_err();
    let expected = "bad header: the topic is 256 bytes, the limit is 255";
    assert!(matches!(&err, Error::Remote(text) if text == expected), "{err:?}");
    server.stop().await;
}
