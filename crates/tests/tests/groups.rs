//! The relay's groups on one process, over real sockets: what reaches whom, what a group
//! keeps, who is in it, and what happens to a member that falls behind. The same behaviour
//! across instances is the cluster suite's (`cluster.rs`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{start, within, WirePeer};
use gotalk::protocol::relay::PeerId;
use gotalk::relay::{Group, JoinError, Note, Relay, MAX_META};
use gotalk::{CloseReason, Config, Handlers, Sock};
use tokio::sync::mpsc;

/// A server whose `join` request puts the caller in the group named by its payload, with the
/// relay and its close reasons at hand.
struct Served {
    relay: Relay,
    closed: Arc<Mutex<Vec<CloseReason>>>,
    server: common::TestServer,
}

async fn served(relay: Relay) -> Served {
    let mut handlers = Handlers::new();
    handlers.relay(relay.clone());
    let joiner = relay.clone();
    // Answers the caller's relay id.
    handlers.handle_buffer("join", move |sock: Sock, payload: Bytes| {
        let relay = joiner.clone();
        async move {
            let group = Group::new(String::from_utf8_lossy(&payload).into_owned())
                .map_err(|e| gotalk::HandlerError::text(e.to_string()))?;
            relay
                .join(&sock, &group, Bytes::from_static(b"{}"))
                .map_err(|e| gotalk::HandlerError::text(e.to_string()))?;
            let id = sock.relay_id().ok_or(gotalk::HandlerError::text("no relay id"))?;
            Ok::<_, gotalk::HandlerError>(Bytes::from(id.to_string()))
        }
    });
    let closed = Arc::new(Mutex::new(Vec::new()));
    let record = closed.clone();
    handlers.on_close(move |_sock, reason| record.lock().unwrap().push(reason.clone()));
    let server = start(handlers, Config::default()).await;
    Served { relay, closed, server }
}

type Heard = mpsc::UnboundedReceiver<(String, Bytes)>;

/// A client that joins `group` and forwards every notification it hears, with its relay id.
async fn member(served: &Served, group: &str) -> (Sock, Heard, PeerId) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut handlers = Handlers::new();
    handlers.fallback_notification(move |_sock, name: String, payload: Bytes| {
        let _ = tx.send((name, payload));
        std::future::ready(())
    });
    let sock = common::connect_with(served.server.addr, handlers, Config::default()).await;
    let id = sock.buffer_request("join", Bytes::from(group.to_owned())).await.expect("join");
    let id = String::from_utf8(id.to_vec()).unwrap().parse().expect("a relay id");
    (sock, rx, id)
}

fn group(name: &str) -> Group {
    Group::new(name).unwrap()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_publish_reaches_every_member_of_its_group_once_and_not_the_one_left_out() {
    let served = served(Relay::new()).await;
    let (_a, mut a_rx, _) = member(&served, "lobby").await;
    let (_b, mut b_rx, b_id) = member(&served, "lobby").await;
    let (_c, mut c_rx, _) = member(&served, "kitchen").await;
    let lobby = group("lobby");
    assert_eq!(served.relay.members(&lobby).len(), 2);

    served.relay.publish(&lobby, Note::new("room.say", "1").unwrap()).unwrap();
    served.relay.publish(&lobby, Note::new("room.say", "2").unwrap().except(b_id)).unwrap();
    served.relay.broadcast(Note::new("room.all", "3").unwrap()).unwrap();

    // Relay ids and other reserved messages are not what this test is about.
    let got = |rx: &mut Heard| {
        let mut seen = Vec::new();
        while let Ok((name, payload)) = rx.try_recv() {
            if name.starts_with("room.") {
                seen.push(format!("{name}={}", String::from_utf8_lossy(&payload)));
            }
        }
        seen
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(got(&mut a_rx), ["room.say=1", "room.say=2", "room.all=3"]);
    assert_eq!(got(&mut b_rx), ["room.say=1", "room.all=3"], "left out of the second");
    assert_eq!(got(&mut c_rx), ["room.all=3"], "another group hears only the broadcast");
}

/// A connection's mailbox is drained by a task started by its first delivery; the first may
/// come from a thread the runtime does not know (an application's own worker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_message_published_from_outside_the_runtime_is_delivered() {
    let served = served(Relay::new()).await;
    let (_a, mut a_rx, _) = member(&served, "lobby").await;
    let relay = served.relay.clone();
    std::thread::spawn(move || {
        for i in 0..3 {
            relay.publish(&group("lobby"), Note::new("room.say", i.to_string()).unwrap()).unwrap();
        }
    })
    .join()
    .unwrap();
    let mut heard = Vec::new();
    within("three messages from the outside thread", async {
        while heard.len() < 3 {
            let (name, payload) = a_rx.recv().await.expect("the member is connected");
            if name == "room.say" {
                heard.push(String::from_utf8_lossy(&payload).into_owned());
            }
        }
    })
    .await;
    assert_eq!(heard, ["0", "1", "2"]);
}

#[tokio::test]
async fn a_group_keeps_what_it_is_asked_to_and_forgets_it_when_empty() {
    let served = served(Relay::new()).await;
    let (a, _rx, _) = member(&served, "lobby").await;
    let lobby = group("lobby");
    for i in 0..5 {
        let note = Note::new("room.say", i.to_string()).unwrap().keep(3);
        served.relay.publish(&lobby, note).unwrap();
    }
    served.relay.publish(&lobby, Note::new("room.typing", "x").unwrap()).unwrap();
    let kept: Vec<_> = served.relay.history(&lobby).await.into_iter().map(|n| n.payload).collect();
    assert_eq!(kept, ["2", "3", "4"], "the last three, oldest first; the unkept one is not");

    a.close();
    wait_for("the member to leave", || served.relay.members(&lobby).is_empty()).await;
    assert!(served.relay.groups().is_empty());
    assert!(served.relay.history(&lobby).await.is_empty(), "an empty group is gone");
}

#[tokio::test]
async fn joining_checks_the_description_at_its_edge() {
    let served = served(Relay::new()).await;
    let (_a, _rx, _) = member(&served, "lobby").await;
    let sock = served.server.only_connection().await;
    let lobby = group("lobby");
    let at_edge = Bytes::from(vec![b' '; MAX_META]);
    served.relay.join(&sock, &lobby, at_edge.clone()).unwrap();
    assert_eq!(served.relay.members(&lobby)[0].meta, at_edge, "joining again updates");
    let past = Bytes::from(vec![b' '; MAX_META + 1]);
    assert_eq!(served.relay.join(&sock, &lobby, past), Err(JoinError::MetaTooLarge(MAX_META + 1)));

    // A connection the relay does not serve cannot join.
    let other = served.relay.clone();
    let (x, _y) = gotalk::Sock::pipe(
        (Arc::new(Handlers::new()), Arc::new(Config::default())),
        (Arc::new(Handlers::new()), Arc::new(Config::default())),
    )
    .await
    .unwrap();
    assert_eq!(other.join(&x, &lobby, ""), Err(JoinError::NoRelay));
}

#[tokio::test]
async fn a_connection_joins_up_to_max_groups_and_one_more_is_refused() {
    const MAX: usize = 3;
    let served = served(Relay::new().max_groups(MAX)).await;
    let (_a, _rx, _) = member(&served, "g0").await;
    let sock = served.server.only_connection().await;
    let relay = &served.relay;
    for n in 1..MAX {
        relay.join(&sock, &group(&format!("g{n}")), "{}").expect("up to the limit");
    }
    let past = group(&format!("g{MAX}"));
    assert_eq!(relay.join(&sock, &past, "{}"), Err(JoinError::TooManyGroups(MAX)));
    assert!(relay.members(&past).is_empty(), "not joined");
    assert_eq!(
        JoinError::TooManyGroups(MAX).to_string(),
        "a connection may be in 3 groups at most"
    );
    // At the limit, a group it is in takes a new description.
    relay.join(&sock, &group("g0"), "{\"away\":true}").expect("joining again updates");
    assert_eq!(relay.members(&group("g0"))[0].meta, Bytes::from_static(b"{\"away\":true}"));
    // Leaving one makes room for another.
    relay.leave(&sock, &group("g1"));
    relay.join(&sock, &past, "{}").expect("room after a leave");
    assert_eq!(relay.members(&past).len(), 1);
    assert_eq!(relay.groups().len(), MAX);
}

#[tokio::test]
async fn a_member_that_stops_reading_is_disconnected_when_its_groups_overflow_its_queue() {
    let served =
        served(Relay::new().queue_bytes(64 * 1024).stall_timeout(Duration::from_secs(60))).await;
    let (_reader, mut reader_rx, _) = member(&served, "lobby").await;
    // A member of ours that joins and then never reads again.
    let mut stalled = WirePeer::connect_ours(served.server.addr).await;
    stalled.send(&common::request(b"0001", "join", b"lobby")).await;
    let lobby = group("lobby");
    wait_for("both members", || served.relay.members(&lobby).len() == 2).await;

    // Far more than the stalled member's socket buffers, send queue and relay queue hold.
    let line = Bytes::from(vec![b'x'; 16 * 1024]);
    for _ in 0..2_000 {
        served.relay.publish(&lobby, Note::new("room.say", line.clone()).unwrap()).unwrap();
        tokio::task::yield_now().await;
        if served.relay.members(&lobby).len() < 2 {
            break;
        }
    }
    wait_for("the stalled member to be disconnected", || served.relay.members(&lobby).len() == 1)
        .await;
    let reasons = served.closed.lock().unwrap().clone();
    assert_eq!(reasons, [CloseReason::GroupOverflow()], "and why");
    // The member that reads got its lines, and stays.
    let heard = within("a line", async {
        loop {
            let (name, _) = reader_rx.recv().await.expect("the reader is still connected");
            if name == "room.say" {
                return name;
            }
        }
    })
    .await;
    assert_eq!(heard, "room.say");
    assert!(!served.relay.members(&lobby).is_empty(), "the reader stays a member");
    drop(stalled);
}
