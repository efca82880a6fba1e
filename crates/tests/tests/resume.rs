//! Resumable relay sessions on one process, over real sockets: a peer that reconnects with
//! its session's token keeps its id and groups and gets what was sent to it while it was
//! away, in order; a session that expires frees its id; a token that is not a kept session's
//! is refused with one text; the bounds on kept sessions hold at their edge. Across instances
//! it is the cluster suite's (`cluster.rs`).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::proxy::Proxy;
use common::{start, within};
use gotalk::protocol::relay::PeerId;
use gotalk::relay::{Group, Inbox, Note, Relay, Secret, Token, Topic};
use gotalk::{CloseReason, Config, Error, Handlers, MemoryBudget, Sock};

const GRACE: Duration = Duration::from_secs(30);

/// A server with the relay on, whose `join` request puts the caller in the group its payload
/// names.
fn server_handlers(relay: &Relay) -> Handlers {
    let mut handlers = Handlers::new();
    handlers.relay(relay.clone());
    let joiner = relay.clone();
    handlers.handle_buffer("join", move |sock: Sock, payload: Bytes| {
        let relay = joiner.clone();
        async move {
            let group = Group::new(String::from_utf8_lossy(&payload).into_owned())
                .map_err(|e| gotalk::HandlerError::text(e.to_string()))?;
            relay
                .join(&sock, &group, Bytes::from_static(b"{}"))
                .map_err(|e| gotalk::HandlerError::text(e.to_string()))?;
            Ok::<_, gotalk::HandlerError>(Bytes::new())
        }
    });
    handlers
}

/// A client of the relay whose inbox outlives its connections, as a reconnecting one's does.
struct Peer {
    inbox: Inbox,
    handlers: Arc<Handlers>,
    chat: Topic,
    notes: tokio::sync::mpsc::UnboundedReceiver<(String, Bytes)>,
}

impl Peer {
    fn new() -> Peer {
        let inbox = Inbox::new();
        let chat = inbox.topic("chat");
        let (tx, notes) = tokio::sync::mpsc::unbounded_channel();
        let mut handlers = Handlers::new();
        handlers.fallback_notification(move |_sock, name: String, payload: Bytes| {
            let _ = tx.send((name, payload));
            std::future::ready(())
        });
        inbox.install(&mut handlers);
        Peer { inbox, handlers: Arc::new(handlers), chat, notes }
    }

    /// Connects and waits for the id and the session's token this connection is given.
    async fn connect(&self, addr: SocketAddr) -> (Sock, PeerId) {
        let mut ids = self.inbox.ids();
        ids.mark_unchanged();
        let sock = within("connect", gotalk::tcp::connect(addr, self.handlers.clone(), config()))
            .await
            .expect("connect");
        within("an id", ids.changed()).await.expect("the inbox lives");
        let id = ids.borrow().expect("an id");
        (sock, id)
    }

    async fn token(&self) -> Token {
        let mut sessions = self.inbox.sessions();
        let token = *within("a session token", sessions.wait_for(Option::is_some))
            .await
            .expect("the inbox lives");
        token.expect("a token")
    }
}

/// No retries: a test sees each refusal itself.
fn config() -> Config {
    Config::default().max_retries(0)
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

async fn next_body(chat: &mut Topic) -> String {
    let message = within("a message", chat.recv()).await.expect("the topic is open");
    message.json().expect("a string")
}

#[tokio::test]
async fn a_resumed_session_keeps_its_id_and_groups_and_gets_what_was_sent_meanwhile_in_order() {
    let relay = Relay::new().resume_grace(GRACE);
    let server = start(server_handlers(&relay), Config::default()).await;
    let mut away = Peer::new();
    let (sock, id) = away.connect(server.addr).await;
    sock.buffer_request("join", Bytes::from_static(b"room")).await.expect("join");
    let token = away.token().await;
    assert_eq!(token.id, id);

    sock.close();
    wait_for("the session to be held", || relay.detached() == 1).await;
    let room = Group::new("room").unwrap();
    assert_eq!(relay.members(&room).len(), 1, "still in its group while away");

    let sender = Peer::new();
    let (from, _) = sender.connect(server.addr).await;
    for i in 0..5 {
        from.relay(id, "chat", &format!("away {i}")).await.expect("held for the peer");
    }
    let note = Note::new("room.say", Bytes::from_static(b"\"to the room\"")).unwrap();
    relay.publish(&room, note).unwrap();

    let (sock, fresh) = away.connect(server.addr).await;
    assert_ne!(fresh, id, "a new connection is given a new id");
    assert_eq!(sock.resume(&token).await.expect("resumed"), id);
    assert_eq!(sock.relay_id_from_whoami().await, id);
    for i in 0..5 {
        assert_eq!(next_body(&mut away.chat).await, format!("away {i}"));
    }
    from.relay(id, "chat", "after").await.expect("delivered to the new connection");
    assert_eq!(next_body(&mut away.chat).await, "after");
    let (name, payload) = within("the group's note", away.notes.recv()).await.unwrap();
    assert_eq!((name.as_str(), &payload[..]), ("room.say", &b"\"to the room\""[..]));
    assert_eq!(relay.members(&room).iter().map(|m| m.peer).collect::<Vec<_>>(), vec![id]);
    assert_eq!(relay.detached(), 0);
    assert_eq!(relay.peers(), 2, "the fresh id was freed");
    let err = from.relay(fresh, "chat", "x").await.unwrap_err();
    assert!(matches!(&err, Error::Remote(t) if t == "unknown peer"), "{err:?}");
    assert_eq!(away.inbox.id().await, id, "the inbox follows the resumed id");
}

/// A resumed session's groups count against the connection's limit: leaving and resuming
/// does not make room for more.
#[tokio::test]
async fn a_resumed_session_brings_its_groups_under_the_limit() {
    let relay = Relay::new().resume_grace(GRACE).max_groups(2);
    let server = start(server_handlers(&relay), Config::default()).await;
    let away = Peer::new();
    let (sock, id) = away.connect(server.addr).await;
    for room in ["a", "b"] {
        sock.buffer_request("join", Bytes::copy_from_slice(room.as_bytes())).await.expect("join");
    }
    let token = away.token().await;
    sock.close();
    wait_for("the session to be held", || relay.detached() == 1).await;
    let (sock, _) = away.connect(server.addr).await;
    assert_eq!(sock.resume(&token).await.expect("resumed"), id);
    let err = sock.buffer_request("join", Bytes::from_static(b"c")).await.unwrap_err();
    assert!(err.to_string().contains("groups"), "{err}");
    // A group it is in can still be joined again (to update its description).
    sock.buffer_request("join", Bytes::from_static(b"a")).await.expect("rejoin");
}

trait Whoami {
    async fn relay_id_from_whoami(&self) -> PeerId;
}

impl Whoami for Sock {
    async fn relay_id_from_whoami(&self) -> PeerId {
        within("whoami", self.whoami()).await.expect("whoami")
    }
}

#[tokio::test]
async fn an_expired_session_frees_its_id_and_its_groups() {
    let relay = Relay::new().resume_grace(Duration::from_millis(300));
    let server = start(server_handlers(&relay), Config::default()).await;
    let away = Peer::new();
    let (sock, id) = away.connect(server.addr).await;
    sock.buffer_request("join", Bytes::from_static(b"room")).await.expect("join");
    let token = away.token().await;
    sock.close();
    wait_for("the session to be held", || relay.detached() == 1).await;
    wait_for("the session to expire", || relay.detached() == 0).await;
    assert!(relay.members(&Group::new("room").unwrap()).is_empty());

    let sender = Peer::new();
    let (from, _) = sender.connect(server.addr).await;
    let err = from.relay(id, "chat", "too late").await.unwrap_err();
    assert!(matches!(&err, Error::Remote(t) if t == "unknown peer"), "{err:?}");
    let (sock, fresh) = away.connect(server.addr).await;
    let err = sock.resume(&token).await.unwrap_err();
    assert!(matches!(&err, Error::Remote(t) if t == "resume refused"), "{err:?}");
    assert_eq!(sock.relay_id_from_whoami().await, fresh, "a refusal leaves the fresh id");
}

#[tokio::test]
async fn every_token_that_is_not_a_kept_sessions_is_refused_with_one_text() {
    let relay = Relay::new().resume_grace(GRACE);
    let server = start(server_handlers(&relay), Config::default()).await;
    let away = Peer::new();
    let (sock, id) = away.connect(server.addr).await;
    let token = away.token().await;
    sock.close();
    wait_for("the session to be held", || relay.detached() == 1).await;

    let mut wrong = *token.secret.as_bytes();
    wrong[15] ^= 1;
    let wrong_secret = Token { id, secret: Secret::from_random(wrong) };
    let unknown = Token { id: PeerId::from_random([9; 16]), secret: token.secret };
    let other = Peer::new();
    let (sock, fresh) = other.connect(server.addr).await;
    for bad in [wrong_secret, unknown] {
        let err = sock.resume(&bad).await.unwrap_err();
        assert!(matches!(&err, Error::Remote(t) if t == "resume refused"), "{err:?}");
    }
    for garbage in ["", "not a token", "\"x.y\""] {
        let err = sock.buffer_request("$resume", Bytes::from(garbage)).await.unwrap_err();
        assert!(matches!(&err, Error::Remote(t) if t == "resume refused"), "{err:?}");
    }
    assert_eq!(sock.relay_id_from_whoami().await, fresh);
    assert_eq!(relay.detached(), 1, "a wrong secret leaves the session held for its owner");
    assert_eq!(sock.resume(&token).await.expect("the right token"), id);
}

#[tokio::test]
async fn with_no_grace_no_session_is_kept_or_told() {
    let relay = Relay::new();
    let server = start(server_handlers(&relay), Config::default()).await;
    let away = Peer::new();
    let (sock, id) = away.connect(server.addr).await;
    sock.close();
    wait_for("the id to be freed", || relay.peers() == 0).await;
    assert_eq!(away.inbox.session(), None, "no token is told");
    let (sock, _) = away.connect(server.addr).await;
    let err = sock.resume(&Token { id, secret: Secret::from_random([0; 16]) }).await.unwrap_err();
    assert!(matches!(&err, Error::Remote(t) if t == "resume refused"), "{err:?}");
}

#[tokio::test]
async fn a_peer_that_says_goodbye_or_is_closed_by_the_server_is_not_kept() {
    let relay = Relay::new().resume_grace(GRACE);
    let server = start(server_handlers(&relay), Config::default()).await;
    let away = Peer::new();
    let (sock, _) = away.connect(server.addr).await;
    within("end", sock.end()).await;
    wait_for("the id to be freed", || relay.peers() == 0).await;
    assert_eq!(relay.detached(), 0, "an ended connection said $done");

    let (_sock, _) = away.connect(server.addr).await;
    server.only_connection().await.close();
    wait_for("the id to be freed", || relay.peers() == 0).await;
    assert_eq!(relay.detached(), 0, "a connection this side closed");
}

#[tokio::test]
async fn kept_sessions_stop_at_max_detached() {
    let relay = Relay::new().resume_grace(GRACE).max_detached(2);
    let server = start(server_handlers(&relay), Config::default()).await;
    let mut kept = Vec::new();
    for n in 1..=3 {
        let away = Peer::new();
        let (sock, id) = away.connect(server.addr).await;
        let token = away.token().await;
        sock.close();
        kept.push((token, id));
        let held = n.min(2);
        wait_for("the close to be handled", || relay.peers() == held && relay.detached() == held)
            .await;
    }
    assert_eq!(relay.detached(), 2, "at the limit");
    assert_eq!(relay.peers(), 2, "the third was freed at once");
    let again = Peer::new();
    let (sock, _) = again.connect(server.addr).await;
    let err = sock.resume(&kept[2].0).await.unwrap_err();
    assert!(matches!(&err, Error::Remote(t) if t == "resume refused"), "{err:?}");
    assert_eq!(sock.resume(&kept[1].0).await.expect("the second is kept"), kept[1].1);
}

#[tokio::test]
async fn a_kept_session_holds_at_most_queue_bytes_charged_to_the_process_budget() {
    // The body of each message is a JSON string; the delivery around it is larger.
    let relay = Relay::new().resume_grace(GRACE).queue_bytes(1000);
    let budget = MemoryBudget::new(64 << 20);
    let server =
        start(server_handlers(&relay), Config::default().memory_budget(budget.clone())).await;
    let away = Peer::new();
    let (sock, id) = away.connect(server.addr).await;
    let token = away.token().await;
    sock.close();
    wait_for("the session to be held", || relay.detached() == 1).await;

    let sender = Peer::new();
    let (from, _) = sender.connect(server.addr).await;
    let idle = budget.used();
    let mut held = 0;
    let body = "x".repeat(100);
    loop {
        match from.relay(id, "chat", &body).await {
            Ok(()) => held += 1,
            Err(Error::Retry { message, .. }) if message == "recipient's queue is full" => break,
            Err(e) => panic!("{e:?}"),
        }
        assert!(held < 100, "the queue is bounded");
    }
    let delivery = {
        let send =
            gotalk::protocol::relay::encode_send(id, "chat", &format!("\"{body}\"")).unwrap();
        let send = gotalk::protocol::relay::parse_send(&send, usize::MAX).unwrap();
        gotalk::protocol::relay::encode_delivery(id, &send).len()
    };
    assert_eq!(held, 1000 / delivery, "as many as fit in queue_bytes, not one more");
    assert!(budget.used() >= idle + held * delivery, "charged to the process budget");

    let (sock, _) = away.connect(server.addr).await;
    sock.resume(&token).await.expect("resumed");
    let mut away = away;
    for _ in 0..held {
        assert_eq!(next_body(&mut away.chat).await, body);
    }
    assert_eq!(relay.detached(), 0);
    from.close();
    sock.close();
    wait_for("every charge given back", || budget.used() == 0).await;
}

#[tokio::test]
async fn a_process_budget_too_small_for_the_kept_messages_refuses_them_as_a_full_queue() {
    let relay = Relay::new().resume_grace(GRACE).queue_bytes(1 << 20);
    let budget = MemoryBudget::new(256 << 10);
    let server =
        start(server_handlers(&relay), Config::default().memory_budget(budget.clone())).await;
    let away = Peer::new();
    let (sock, id) = away.connect(server.addr).await;
    sock.close();
    wait_for("the session to be held", || relay.detached() == 1).await;
    let sender = Peer::new();
    let (from, _) = sender.connect(server.addr).await;
    let body = "x".repeat(16 << 10);
    let mut held = 0usize;
    let refused = loop {
        match from.relay(id, "chat", &body).await {
            Ok(()) => held += 1,
            Err(e) => break e,
        }
        assert!(held < 64, "the process budget bounds what is held");
    };
    assert!(
        matches!(&refused, Error::Retry { message, .. } if message == "recipient's queue is full"),
        "{refused:?}"
    );
    assert!(held * body.len() <= 256 << 10, "{held} messages held");
}

#[tokio::test]
async fn a_session_resumed_while_its_old_connection_looks_open_closes_that_connection() {
    let relay = Relay::new().resume_grace(GRACE);
    let mut handlers = server_handlers(&relay);
    let (tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    handlers.on_close(move |_sock, reason| {
        let _ = tx.send(reason.clone());
    });
    let server = start(handlers, Config::default()).await;
    let proxy = Proxy::start(server.addr).await;
    let away = Peer::new();
    let (old, id) = away.connect(proxy.addr).await;
    let token = away.token().await;
    // The network goes silent: the server still thinks the connection is open.
    proxy.swallow();
    let (sock, _) = away.connect(server.addr).await;
    assert_eq!(sock.resume(&token).await.expect("resumed"), id);
    let reason = within("the old connection's close", closed.recv()).await.unwrap();
    assert_eq!(reason, CloseReason::Resumed());
    assert_eq!(relay.detached(), 0);
    assert_eq!(sock.relay_id_from_whoami().await, id);
    drop(old);
}
