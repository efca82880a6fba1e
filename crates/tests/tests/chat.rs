//! The demo chat in the real `gotalk serve`, over real sockets: a peer that joins and leaves
//! throwaway rooms as fast as the server answers costs the other members a bounded stream of
//! updates and disconnects none of them, not even one that reads slowly; names are taken in
//! NFKC, refused with invisible or bidirectional characters or mixed scripts, and unique in a
//! room ignoring case, unless the one holding the name is the same page (its secret) on a
//! connection that lingers.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::process::ServeProcess;
use common::{within, WirePeer};
use gotalk::protocol::{Frame, Id, Name};
use gotalk::relay::{Inbox, PeerId};
use gotalk::{Config, Handlers, Sock};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The least time between two sends of one member's room list (`STATE_EVERY` in the chat).
const STATE_EVERY: Duration = Duration::from_millis(200);

async fn serve_with(extra: &[&str]) -> ServeProcess {
    let mut args = vec!["--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    ServeProcess::start(&args).await
}

fn tcp_addr(served: &ServeProcess) -> String {
    served.tcp.trim_start_matches("tcp://").to_owned()
}

/// What a member heard.
#[derive(Default)]
struct Heard {
    /// `chat.rooms` notifications.
    room_lists: AtomicUsize,
    /// Bytes of `chat.rooms` and `chat.members` payloads.
    update_bytes: AtomicUsize,
    /// Every relay id the connection was given.
    ids: Mutex<Vec<PeerId>>,
}

/// A chat member: a page-like WebSocket client (answers `chat.ping` and `chat.name`) or a
/// program over TCP, counting what it hears. One with `slow` takes that long over each
/// update, so its notifications back up into its socket as with a peer that reads slowly.
struct Member {
    name: &'static str,
    sock: Sock,
    heard: Arc<Heard>,
    lines: mpsc::UnboundedReceiver<Value>,
    _inbox: Inbox,
}

impl Member {
    async fn page(served: &ServeProcess, name: &'static str) -> Member {
        Member::connect(served, name, true, None).await
    }

    async fn program(served: &ServeProcess, name: &'static str, slow: Option<Duration>) -> Member {
        Member::connect(served, name, false, slow).await
    }

    async fn connect(
        served: &ServeProcess,
        name: &'static str,
        page: bool,
        slow: Option<Duration>,
    ) -> Member {
        let heard = Arc::new(Heard::default());
        let (lines_tx, lines) = mpsc::unbounded_channel();
        let mut handlers = Handlers::new();
        handlers
            .handle("chat.ping", |_sock, _: Value| async { Ok::<_, String>(Value::Null) })
            .handle("chat.name", move |_sock, _: Value| async move {
                Ok::<_, String>(json!({ "name": name }))
            })
            .handle_buffer_notification("chat.message", move |_sock, payload| {
                let _ = lines_tx.send(serde_json::from_slice::<Value>(&payload).unwrap());
                async {}
            });
        for (note, is_room_list) in [("chat.rooms", true), ("chat.members", false)] {
            let heard = heard.clone();
            handlers.handle_buffer_notification(note, move |_sock, payload| {
                if is_room_list {
                    heard.room_lists.fetch_add(1, Ordering::SeqCst);
                }
                heard.update_bytes.fetch_add(payload.len(), Ordering::SeqCst);
                async move {
                    if let Some(slow) = slow {
                        tokio::time::sleep(slow).await;
                    }
                }
            });
        }
        let inbox = Inbox::new();
        let ids = heard.clone();
        inbox.on_id(move |id| ids.ids.lock().unwrap().push(id));
        inbox.install(&mut handlers);
        let handlers = Arc::new(handlers);
        let sock = if page {
            gotalk::ws::connect(&served.ws, handlers, Config::default()).await.unwrap()
        } else {
            gotalk::tcp::connect(tcp_addr(served).as_str(), handlers, Config::default())
                .await
                .unwrap()
        };
        let member = Member { name, sock, heard, lines, _inbox: inbox };
        within("the relay id", async {
            while member.ids().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        let joined = member.call("chat.join", json!({"room": "lobby", "name": name})).await;
        joined.unwrap_or_else(|e| panic!("{name} joins: {e}"));
        member
    }

    async fn call(&self, op: &str, value: Value) -> Result<Value, String> {
        within(op, self.sock.request::<_, Value>(op, &value)).await.map_err(|e| e.to_string())
    }

    fn ids(&self) -> Vec<PeerId> {
        self.heard.ids.lock().unwrap().clone()
    }

    /// Waits for the line `text` in the lobby.
    async fn hears(&mut self, text: &str) {
        let name = self.name;
        let heard = async {
            while let Some(line) = self.lines.recv().await {
                if line["text"] == text {
                    return;
                }
            }
        };
        within(&format!("{name} hears {text:?}"), async {
            tokio::select! {
                _ = heard => {}
                reason = self.sock.closed() => panic!("{name} was disconnected: {reason}"),
            }
        })
        .await;
    }
}

/// A request frame for `chat.*` with a JSON argument.
fn chat_request(n: u32, op: &str, value: &Value) -> Frame {
    let id = format!("{:04}", n % 10_000);
    Frame::SingleRequest {
        id: Id(id.as_bytes().try_into().unwrap()),
        op: Name::new(op).unwrap(),
        payload: serde_json::to_vec(value).unwrap().into(),
    }
}

/// What the churner's requests were answered with, and how long it took.
#[derive(Debug, Default)]
struct Answers {
    ok: usize,
    errors: Vec<String>,
    took: Duration,
}

/// Joins and leaves `pairs` throwaway rooms over raw TCP, pipelined: `window` joins written
/// at once, their answers read, then the matching leaves.
async fn churn(served: &ServeProcess, pairs: usize, window: usize) -> Answers {
    let addr = tcp_addr(served).parse().unwrap();
    let mut peer = WirePeer::connect(addr).await;
    let started = Instant::now();
    let mut answers = Answers::default();
    let mut n = 0;
    for start in (0..pairs).step_by(window) {
        let rooms: Vec<String> =
            (start..pairs.min(start + window)).map(|i| format!("t{i}")).collect();
        for op in ["chat.join", "chat.leave"] {
            let mut wire = BytesMut::new();
            for room in &rooms {
                n += 1;
                chat_request(n, op, &json!({ "room": room })).encode(&mut wire);
            }
            peer.write(&wire).await;
            let mut left = rooms.len();
            while left > 0 {
                match peer.frame().await {
                    Frame::SingleResult { .. } => answers.ok += 1,
                    Frame::ErrorResult { payload, .. } | Frame::RetryResult { payload, .. } => {
                        answers.errors.push(String::from_utf8_lossy(&payload).into_owned())
                    }
                    _ => continue,
                }
                left -= 1;
            }
        }
    }
    answers.took = started.elapsed();
    answers
}

/// Three members sit in the lobby, two pages and a program that takes 50 ms over each
/// update, while rooms with long names make every room list about 1 KiB; then a fourth
/// connection makes 5,000 joins and 5,000 leaves. Every member keeps its connection and its
/// relay id, hears a line said afterwards, and was sent at most one room list per
/// [`STATE_EVERY`] however many changes there were.
async fn members_ride_out_churn(served: &ServeProcess) -> Answers {
    let started = Instant::now();
    let alice = Member::page(served, "alice").await;
    let bob = Member::page(served, "bob").await;
    let slow = Member::program(served, "slow", Some(Duration::from_millis(50))).await;
    let mut padding = Vec::new();
    for holder in 0..3 {
        let sock = gotalk::tcp::connect(
            tcp_addr(served).as_str(),
            Arc::new(Handlers::new()),
            Config::default(),
        )
        .await
        .unwrap();
        for room in 0..7 {
            let room = format!("padding-room-number-{holder}-{room:02}");
            let joined = sock.request::<_, Value>("chat.join", &json!({ "room": room })).await;
            joined.unwrap();
        }
        padding.push(sock);
    }
    let ids = [alice.ids(), bob.ids(), slow.ids()];
    for id in &ids {
        assert_eq!(id.len(), 1, "each member has its relay id");
    }

    let answers = churn(served, 5_000, 8).await;

    alice.call("chat.say", json!({"text": "still here?"})).await.unwrap();
    let mut members = [alice, bob, slow];
    for (member, id) in members.iter_mut().zip(&ids) {
        member.hears("still here?").await;
        let elapsed = started.elapsed();
        assert!(!member.sock.is_closed(), "{:?}", member.sock.close_reason());
        assert_eq!(&member.ids(), id, "the same relay id: never reconnected");
        let lists = member.heard.room_lists.load(Ordering::SeqCst);
        let bytes = member.heard.update_bytes.load(Ordering::SeqCst);
        eprintln!(
            "{}: {lists} room lists, {bytes} bytes of updates in {elapsed:?}; churn: {} passed, {} refused in {:?}",
            member.name,
            answers.ok,
            answers.errors.len(),
            answers.took
        );
        let most = (elapsed.as_millis() / STATE_EVERY.as_millis()) as usize + 2;
        assert!(
            lists <= most,
            "{}: {lists} room lists in {elapsed:?}, at most {most}",
            member.name
        );
        // A room list and the lobby's members are about 1 KiB each here.
        assert!(
            bytes <= 2 * most * 2048,
            "{}: {bytes} bytes of updates in {elapsed:?}",
            member.name
        );
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_within_the_default_limits_is_refused_and_costs_members_nothing() {
    let served = serve_with(&[]).await;
    let answers = members_ride_out_churn(&served).await;
    // The first 60 changes pass, in a burst, and one more each second; then the churner is
    // told to slow down.
    let most = 60 + answers.took.as_secs() as usize + 1;
    assert!((60..=most).contains(&answers.ok), "{} passed in {:?}", answers.ok, answers.took);
    let refused = "too many joins and leaves: at most 60 a minute; try again in";
    assert!(answers.errors.iter().any(|e| e.starts_with(refused)), "{:?}", answers.errors.first());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_without_a_rate_limit_still_reaches_members_coalesced() {
    let served = serve_with(&["--chat-room-changes", "1000000"]).await;
    let answers = members_ride_out_churn(&served).await;
    assert_eq!((answers.ok, answers.errors.len()), (10_000, 0), "{:?}", answers.errors.first());
}

#[tokio::test]
async fn names_are_nfkc_unique_per_room_ignoring_case_and_visible() {
    let served = serve_with(&[]).await;
    let alice = Member::program(&served, "alice", None).await;
    let other = Member::program(&served, "bob", None).await;
    let join = |name: &str| json!({"room": "lobby", "name": name});
    let taken = r#"name "alice" is taken in room "lobby": choose another"#;
    for (name, refused) in [
        ("ａｌｉｃｅ", taken),
        ("ALICE", r#"name "ALICE" is taken in room "lobby": choose another"#),
        (" alice ", taken),
        ("al\u{200b}ice", "name cannot hold U+200B (an invisible or formatting character)"),
        ("\u{202e}ecila", "name cannot hold U+202E (a bidirectional control)"),
        ("\u{0430}lice", "name \"аlice\" mixes scripts (Cyrillic, Latin): write it in one"),
        ("guest-1", "name \"guest-1\" is the automatic name of another connection"),
    ] {
        let e = other.call("chat.join", join(name)).await.unwrap_err();
        assert!(e.ends_with(refused), "{name:?}: {e}");
        let e = other.call("chat.rename", json!({ "name": name })).await.unwrap_err();
        assert!(e.ends_with(refused), "{name:?} as a rename: {e}");
    }
    // Shown as the letters it reads as.
    let renamed = other.call("chat.rename", json!({"name": "ｂｏｂ２"})).await.unwrap();
    assert_eq!(renamed["name"], "bob2");
    // A name is unique per room: once alice is elsewhere, her name is free here.
    alice.call("chat.join", json!({"room": "side"})).await.unwrap();
    alice.call("chat.leave", json!({"room": "lobby"})).await.unwrap();
    other.call("chat.rename", json!({"name": "Alice"})).await.unwrap();
    let e = alice.call("chat.join", json!({"room": "lobby"})).await.unwrap_err();
    assert!(e.ends_with(taken), "{e}");
    let members =
        other.call("chat.join", json!({"room": "lobby"})).await.unwrap()["members"].clone();
    let names: Vec<&str> =
        members.as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Alice"]);
}

#[tokio::test]
async fn the_flags_set_rooms_per_member_and_joins_and_leaves_per_minute() {
    let served = serve_with(&["--chat-rooms-per-member", "2", "--chat-room-changes", "3"]).await;
    // Joining the lobby is the first change and the first room.
    let program = Member::program(&served, "bot", None).await;
    program.call("chat.join", json!({"room": "a"})).await.unwrap();
    let e = program.call("chat.join", json!({"room": "b"})).await.unwrap_err();
    assert!(e.ends_with("you are in 2 rooms, the most allowed: leave one first"), "{e}");
    program.call("chat.leave", json!({"room": "a"})).await.unwrap();
    let e = program.call("chat.join", json!({"room": "b"})).await.unwrap_err();
    assert!(e.contains("too many joins and leaves: at most 3 a minute; try again in "), "{e}");
}

#[tokio::test]
async fn a_page_that_answers_the_ping_stays_a_member_and_hears_who_it_is() {
    let served = serve_with(&[]).await;
    let (you_tx, mut you) = mpsc::unbounded_channel();
    let mut handlers = Handlers::new();
    handlers
        .handle("chat.ping", |_sock, _: Value| async { Ok::<_, String>(Value::Null) })
        .handle("chat.name", |_sock, _: Value| async { Ok::<_, String>(json!({"name": "quiet"})) })
        .handle_buffer_notification("chat.you", move |_sock, payload| {
            let _ = you_tx.send(serde_json::from_slice::<Value>(&payload).unwrap());
            async {}
        });
    let page =
        gotalk::ws::connect(&served.ws, Arc::new(handlers), Config::default()).await.unwrap();
    // The page joins nothing: it is a member from its answered ping, under the name it gave,
    // with the round trip the server measured.
    let told = within("chat.you", async {
        loop {
            let told = you.recv().await.unwrap();
            if told["name"] == "quiet" && told["rtt_ms"].is_number() {
                return told;
            }
        }
    })
    .await;
    assert_eq!(told["transport"], "websocket");
    assert!(!page.is_closed());
}

#[tokio::test]
async fn a_page_with_its_secret_takes_its_name_back_from_its_lingering_connection() {
    let served = serve_with(&[]).await;
    // The page's first connection, which lingers (as its rows do on the other instances of a
    // cluster when its instance dies) while the page comes back on a new one.
    let tab = "9c1f0e2d3b4a59687766554433221100";
    let old = Member::program(&served, "bob-before", None).await;
    let join = |name: &str, secret: Option<&str>| match secret {
        Some(secret) => json!({"room": "lobby", "name": name, "secret": secret}),
        None => json!({"room": "lobby", "name": name}),
    };
    old.call("chat.rename", json!({"name": "Bob", "secret": tab})).await.unwrap();
    // The clock the rows are ordered by moves on before the page comes back.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let back = Member::program(&served, "bob-after", None).await;
    let joined = back.call("chat.join", join("bob", Some(tab))).await.unwrap();
    // Listed once, under the connection it has now, and with nothing of its secret.
    let back_id = back.ids().last().unwrap().to_string();
    let members = joined["members"].as_array().unwrap();
    let listed: Vec<(&str, &str)> = members
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["peer"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(listed, [("bob", back_id.as_str())]);
    let mut keys: Vec<&String> = members[0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["id", "name", "peer", "rtt_ms", "transport"]);
    assert!(!joined.to_string().contains(tab));
    // Anyone else is refused the name: without a secret, or with another tab's.
    let other = Member::program(&served, "eve", None).await;
    let taken = r#"name "BOB" is taken in room "lobby": choose another"#;
    for secret in [None, Some("another tab's secret, as long")] {
        let e = other.call("chat.join", join("BOB", secret)).await.unwrap_err();
        assert!(e.ends_with(taken), "{secret:?}: {e}");
    }
    // A secret is 16 to 128 bytes.
    let e = other
        .call("chat.rename", json!({"name": "eve", "secret": "s".repeat(129)}))
        .await
        .unwrap_err();
    assert!(e.ends_with("a page's secret is 16 to 128 bytes; this one has 129"), "{e}");
    other.call("chat.rename", json!({"name": "eve", "secret": "s".repeat(128)})).await.unwrap();
}
