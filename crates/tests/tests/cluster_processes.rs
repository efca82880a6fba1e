//! The cluster mode with real processes (`gotalk_tests::cluster`): three `gotalk-e2e serve`
//! instances on one bus (`redis-server`, `nats-server`) behind haproxy, and clients of the
//! relay and the demo chat on them.
//!
//! - An instance killed with SIGKILL: relays to its peers' ids answer `unknown peer` at once,
//!   never hang, and its members leave the rooms the other instances list within the presence
//!   expiry.
//! - An instance frozen with SIGSTOP: a sender on another instance keeps being answered while
//!   its relays to a peer on the frozen one end in `relay timeout` (or `unknown peer`); after
//!   SIGCONT relays reach that peer again.
//! - Keepalive clients coming in through haproxy: those of a killed instance come back on the
//!   others (the time until all are back is printed).
//! - The bus down for 2 s and for 10 s: relays between instances and rooms work again soon
//!   after it is back (the time is printed); the 10 s case catches a subscriber that never
//!   subscribes again.
//!
//! `GOTALK_CLUSTER_TESTS=skip` skips them on a machine without the servers.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gotalk::keepalive::{Builder, KeepAlive};
use gotalk::relay::{Inbox, PeerId, Topic};
use gotalk::{Config, Error, Handlers, Sock};
use gotalk_tests::cluster::{http_get, BusKind, Cluster, Options};
use gotalk_tests::servers::skip_cluster_tests;
use serde_json::{json, Value};

/// How long rows of a dead instance may stay listed: the bus's presence expiry (15 s after the
/// instance's last heartbeat, which was up to 5 s before it died), and the expiry's own check.
const PRESENCE_EXPIRY: Duration = Duration::from_secs(25);

/// One cluster at a time: three debug servers each, on two shared cores, and timings asserted.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn cluster(bus: BusKind) -> Cluster {
    Cluster::start(Options {
        binary: env!("CARGO_BIN_EXE_gotalk-e2e").into(),
        bus: Some(bus),
        instances: 3,
        serve_args: Vec::new(),
    })
    .await
}

/// A program on one instance over TCP: a relay peer and, once it joins one, a chat member.
struct Client {
    sock: Sock,
    inbox: Inbox,
    id: PeerId,
    /// The latest `chat.members` of each room, as names.
    members: Arc<Mutex<HashMap<String, Vec<String>>>>,
    /// Texts of `chat.message` lines heard.
    lines: Arc<Mutex<Vec<String>>>,
}

impl Client {
    async fn connect(addr: &str, name: &'static str) -> Client {
        let members = Arc::new(Mutex::new(HashMap::new()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut handlers = Handlers::new();
        let (heard_members, heard_lines) = (members.clone(), lines.clone());
        handlers
            .handle("chat.ping", |_sock, _: Value| async { Ok::<_, String>(Value::Null) })
            .handle("chat.name", move |_sock, _: Value| async move {
                Ok::<_, String>(json!({ "name": name }))
            })
            .handle_notification("chat.members", move |_sock, note: Value| {
                let names = note["members"]
                    .as_array()
                    .map(|m| {
                        m.iter().filter_map(|m| m["name"].as_str().map(String::from)).collect()
                    })
                    .unwrap_or_default();
                let room = note["room"].as_str().unwrap_or_default().to_owned();
                heard_members.lock().unwrap().insert(room, names);
                async {}
            })
            .handle_notification("chat.message", move |_sock, line: Value| {
                if let Some(text) = line["text"].as_str() {
                    heard_lines.lock().unwrap().push(text.to_owned());
                }
                async {}
            });
        let inbox = Inbox::new();
        inbox.install(&mut handlers);
        // A RetryResult (`relay unavailable`) is the test's to see, not retried away.
        let config = Config::default().max_retries(0);
        let sock =
            common::within("connect", gotalk::tcp::connect(addr, Arc::new(handlers), config))
                .await
                .unwrap_or_else(|e| panic!("{name} connects to {addr}: {e}"));
        let id = common::within("the relay id", inbox.id()).await;
        Client { sock, inbox, id, members, lines }
    }

    async fn join(&self, room: &str, name: &str) {
        let input = json!({"room": room, "name": name});
        let joined = self.sock.request::<_, Value>("chat.join", &input);
        common::within("chat.join", joined)
            .await
            .unwrap_or_else(|e| panic!("{name} joins {room}: {e}"));
    }

    async fn say(&self, room: &str, text: &str) -> Result<(), Error> {
        let input = json!({"room": room, "text": text});
        let said = self.sock.request::<_, Value>("chat.say", &input);
        common::within("chat.say", said).await.map(drop)
    }

    fn lists(&self, room: &str, name: &str) -> bool {
        self.members.lock().unwrap().get(room).is_some_and(|m| m.iter().any(|n| n == name))
    }

    fn heard(&self, text: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|t| t == text)
    }

    /// Relays `text` to `to` and returns the outcome and how long it took; fails the test if
    /// it takes longer than `bound` (a relay never hangs).
    async fn relay(
        &self,
        to: PeerId,
        text: &str,
        bound: Duration,
    ) -> (Result<(), Error>, Duration) {
        let started = Instant::now();
        match tokio::time::timeout(bound, self.sock.relay(to, "t", text)).await {
            Ok(outcome) => (outcome, started.elapsed()),
            Err(_) => panic!("a relay to {to} was not answered within {bound:?}"),
        }
    }

    /// Relays `text` to `to` until one is delivered, each attempt answered within 3 s, and
    /// waits until the recipient hears it on `heard`; fails the test if no attempt succeeds
    /// within `limit` of `since`. Returns the time from `since` to the delivery, and how many
    /// attempts it took.
    async fn relay_until_delivered(
        &self,
        (to, heard): (PeerId, &mut Topic),
        text: &str,
        since: Instant,
        limit: Duration,
    ) -> (Duration, usize) {
        let mut attempts = 0;
        let delivered = loop {
            attempts += 1;
            let (outcome, _) = self.relay(to, text, Duration::from_secs(3)).await;
            if outcome.is_ok() {
                break since.elapsed();
            }
            assert!(since.elapsed() < limit, "relays ({text:?}) to {to}: {outcome:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // After whatever was queued for the recipient meanwhile.
        common::within("the recipient hears it", async {
            while let Some(message) = heard.recv().await {
                if message.json::<String>().is_ok_and(|t| t == text) {
                    return;
                }
            }
        })
        .await;
        (delivered, attempts)
    }
}

/// The relay's refusal: an ErrorResult's text, or a RetryResult's (the clients do not retry).
fn remote_error(outcome: &Result<(), Error>) -> Option<&str> {
    match outcome {
        Err(Error::Remote(text)) | Err(Error::Retry { message: text, .. }) => Some(text),
        _ => None,
    }
}

/// Polls `cond` every 20 ms until it holds; returns how long that took, or panics after
/// `within`.
async fn until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

async fn a_killed_instance(bus: BusKind) {
    if skip_cluster_tests() {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = cluster(bus).await;
    let alice = Client::connect(&cluster.instances[0].tcp_addr(), "alice").await;
    let bob = Client::connect(&cluster.instances[1].tcp_addr(), "bob").await;
    alice.join("room", "alice").await;
    bob.join("room", "bob").await;
    until("alice lists bob, on another instance", Duration::from_secs(5), || {
        alice.lists("room", "bob")
    })
    .await;
    let mut from_alice = bob.inbox.topic("t");
    let (outcome, _) = alice.relay(bob.id, "before", Duration::from_secs(2)).await;
    outcome.expect("a relay across instances");
    let heard = common::within("bob hears alice", from_alice.recv()).await.unwrap();
    assert_eq!((heard.from, heard.json::<String>().unwrap().as_str()), (alice.id, "before"));

    cluster.instances[1].kill().await;
    let killed = Instant::now();
    // Each relay is answered, and soon `unknown peer`: bob's id left the bus with his instance.
    let unknown_after = loop {
        let (outcome, took) = alice.relay(bob.id, "after", Duration::from_secs(2)).await;
        assert!(took < Duration::from_millis(1500), "a relay took {took:?}: {outcome:?}");
        match remote_error(&outcome) {
            Some("unknown peer") => break killed.elapsed(),
            Some("relay timeout") | Some("relay unavailable") => {}
            _ => panic!("a relay to a peer of a killed instance: {outcome:?}"),
        }
        assert!(killed.elapsed() < Duration::from_secs(3), "still not `unknown peer`");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(unknown_after < Duration::from_secs(1), "unknown peer after {unknown_after:?}");
    let gone_after =
        until("bob leaves alice's room", PRESENCE_EXPIRY, || !alice.lists("room", "bob")).await;
    println!(
        "{bus:?}: relays to the killed instance's peer answered `unknown peer` {} ms after the \
         kill; its member left the room {:.1} s after",
        unknown_after.as_millis(),
        gone_after.as_secs_f64()
    );
    // The others carry on among themselves.
    let carol = Client::connect(&cluster.instances[2].tcp_addr(), "carol").await;
    let (outcome, _) = alice.relay(carol.id, "still here", Duration::from_secs(2)).await;
    outcome.expect("a relay between the instances left");
}

async fn a_stopped_instance(bus: BusKind) {
    if skip_cluster_tests() {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = cluster(bus).await;
    let alice = Arc::new(Client::connect(&cluster.instances[0].tcp_addr(), "alice").await);
    let bob = Client::connect(&cluster.instances[1].tcp_addr(), "bob").await;
    let mut from_alice = bob.inbox.topic("t");
    alice
        .relay(bob.id, "before", Duration::from_secs(2))
        .await
        .0
        .expect("a relay across instances");
    common::within("bob hears alice", from_alice.recv()).await.unwrap();

    cluster.instances[1].pause();
    let stopped = Instant::now();
    // Relays to bob are outstanding while alice's other requests are answered.
    let relays: Vec<_> = (0..8)
        .map(|i| {
            let alice = alice.clone();
            let to = bob.id;
            tokio::spawn(async move {
                alice.relay(to, &format!("frozen {i}"), Duration::from_secs(5)).await
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        let echoed = tokio::time::timeout(
            Duration::from_secs(1),
            alice.sock.buffer_request("echo", format!("echo {i}")),
        )
        .await
        .expect("an echo answered while relays wait on a stopped instance")
        .expect("echo");
        assert_eq!(echoed, format!("echo {i}").as_bytes());
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut outcomes = Vec::new();
    for relay in relays {
        let (outcome, took) = relay.await.unwrap();
        let text = remote_error(&outcome).map(String::from);
        assert!(
            matches!(text.as_deref(), Some("relay timeout") | Some("unknown peer")),
            "a relay to a stopped instance: {outcome:?} after {took:?}"
        );
        outcomes.push((text.unwrap(), took));
    }
    println!(
        "{bus:?}: with an instance stopped, the slowest echo took {} ms; its peer's relays ended \
         {:?}",
        slowest.as_millis(),
        outcomes.iter().map(|(t, d)| format!("{t} in {} ms", d.as_millis())).collect::<Vec<_>>()
    );
    assert!(stopped.elapsed() < Duration::from_secs(5));

    cluster.instances[1].resume();
    // Bob's instance runs again: relays reach him.
    let to_bob = (bob.id, &mut from_alice);
    alice.relay_until_delivered(to_bob, "after", Instant::now(), Duration::from_secs(10)).await;
}

/// How many keepalive clients come in through haproxy.
const CROWD: usize = 30;

/// `/stats`'s WebSocket count of each instance.
async fn websockets(cluster: &Cluster) -> Vec<u64> {
    let mut counts = Vec::new();
    for instance in &cluster.instances {
        let text = http_get(&instance.http_addr(), "/stats").await.unwrap_or_default();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let stats: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        counts.push(stats["websocket"].as_u64().unwrap_or(0));
    }
    counts
}

async fn clients_of_a_killed_instance(bus: BusKind) {
    if skip_cluster_tests() {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = cluster(bus).await;
    let url = format!("ws://127.0.0.1:{}/gotalk/", cluster.haproxy.port());
    let crowd: Vec<KeepAlive> = (0..CROWD)
        .map(|_| {
            // The default backoff, as pages have: 500 ms doubling to 5 s, half randomised.
            Builder::ws(
                gotalk::ws::Connector::new(),
                url.clone(),
                Arc::new(Handlers::new()),
                Config::default(),
            )
            .start()
        })
        .collect();
    for client in &crowd {
        common::within("a client through haproxy", client.buffer_request("echo", "hi"))
            .await
            .unwrap();
    }
    let counts = websockets(&cluster).await;
    assert_eq!(counts.iter().sum::<u64>(), CROWD as u64, "{counts:?}");
    let victim = (0..counts.len()).max_by_key(|&i| counts[i]).unwrap();
    let on_victim = counts[victim] as usize;
    assert!(on_victim > 0 && on_victim < CROWD, "haproxy spread them: {counts:?}");

    cluster.instances[victim].kill().await;
    let killed = Instant::now();
    let back: Vec<Duration> =
        futures_util::future::join_all(crowd.iter().map(|client| async move {
            // Those on the killed instance see their connection drop, reconnect, and are answered.
            loop {
                if client.connections() >= 2 && client.is_connected() {
                    let answered = tokio::time::timeout(
                        Duration::from_secs(2),
                        client.buffer_request("echo", "back"),
                    )
                    .await;
                    if matches!(answered, Ok(Ok(_))) {
                        return Some(killed.elapsed());
                    }
                }
                if killed.elapsed() > Duration::from_secs(30) {
                    return None;
                }
                if client.connections() < 2 && killed.elapsed() > Duration::from_secs(3) {
                    // Never dropped: it was on another instance.
                    return Some(Duration::ZERO);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }))
        .await
        .into_iter()
        .map(|b| b.expect("every client is answered again within 30 s"))
        .filter(|b| !b.is_zero())
        .collect();
    assert_eq!(back.len(), on_victim, "exactly the killed instance's clients reconnected");
    let counts = websockets(&cluster).await;
    assert_eq!(counts[victim], 0);
    assert_eq!(counts.iter().sum::<u64>(), CROWD as u64, "{counts:?}");
    let mut sorted = back.clone();
    sorted.sort();
    println!(
        "{bus:?}: {on_victim} of {CROWD} clients on the killed instance, all back through haproxy \
         after {} ms (first {} ms, median {} ms)",
        sorted[sorted.len() - 1].as_millis(),
        sorted[0].as_millis(),
        sorted[sorted.len() / 2].as_millis()
    );
}

async fn the_bus_down_for(bus: BusKind, outage: Duration) {
    if skip_cluster_tests() {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = cluster(bus).await;
    let alice = Client::connect(&cluster.instances[0].tcp_addr(), "alice").await;
    let bob = Client::connect(&cluster.instances[1].tcp_addr(), "bob").await;
    alice.join("room", "alice").await;
    bob.join("room", "bob").await;
    let mut from_alice = bob.inbox.topic("t");
    alice
        .relay(bob.id, "before", Duration::from_secs(2))
        .await
        .0
        .expect("a relay across instances");
    common::within("bob hears alice", from_alice.recv()).await.unwrap();

    let bus_server = cluster.bus.as_mut().unwrap();
    bus_server.kill();
    let down = Instant::now();
    // While it is down a relay across instances is answered at once, and not delivered.
    let (outcome, took) = alice.relay(bob.id, "while down", Duration::from_secs(3)).await;
    assert!(
        matches!(remote_error(&outcome), Some("relay unavailable") | Some("relay timeout")),
        "a relay across instances with the bus down: {outcome:?}"
    );
    assert!(took < Duration::from_millis(1500), "{took:?}");
    tokio::time::sleep(outage.saturating_sub(down.elapsed())).await;
    bus_server.restart().await;
    let restarted = Instant::now();

    let to_bob = (bob.id, &mut from_alice);
    let (relayed, attempts) =
        alice.relay_until_delivered(to_bob, "after", restarted, Duration::from_secs(20)).await;
    // The room: each hears the other again.
    let mut n = 0;
    let room = loop {
        n += 1;
        let (a, b) = (format!("from alice {n}"), format!("from bob {n}"));
        alice.say("room", &a).await.expect("alice says");
        bob.say("room", &b).await.expect("bob says");
        tokio::time::sleep(Duration::from_millis(50)).await;
        if bob.heard(&a) && alice.heard(&b) {
            break restarted.elapsed();
        }
        assert!(restarted.elapsed() < Duration::from_secs(20), "the room after the bus is back");
    };
    println!(
        "{bus:?}, bus down {} s: a relay across instances delivered {} ms after it was back \
         ({attempts} attempts), the room both ways {} ms after",
        outage.as_secs(),
        relayed.as_millis(),
        room.as_millis()
    );
}

/// Every case on one bus, in a module named after it (`redis::…`, `nats::…`).
macro_rules! on_a_bus {
    ($bus:ident, $kind:expr) => {
        mod $bus {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_killed_instance_peers_are_unknown_at_once_and_leave_rooms_within_expiry() {
                a_killed_instance($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_stopped_instance_times_out_relays_without_blocking_the_sender_and_recovers()
            {
                a_stopped_instance($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn clients_of_a_killed_instance_come_back_through_the_load_balancer() {
                clients_of_a_killed_instance($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn relays_and_rooms_work_again_after_the_bus_is_down_2s() {
                the_bus_down_for($kind, Duration::from_secs(2)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn relays_and_rooms_work_again_after_the_bus_is_down_10s() {
                the_bus_down_for($kind, Duration::from_secs(10)).await;
            }
        }
    };
}

on_a_bus!(redis, BusKind::Redis);
on_a_bus!(nats, BusKind::Nats);
