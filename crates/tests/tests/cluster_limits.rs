//! The cluster bus's limits at their edges, and its liveness probe, over a real `redis-server`
//! and a real `nats-server` on free ports: the value at a limit passes, one past it fails at
//! once and is counted in `ClusterBus::metrics`. The bus server is paused (SIGSTOP) where a
//! case needs messages to stay on their way. With `GOTALK_CLUSTER_TESTS=skip` they pass
//! without a bus.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gotalk::protocol::relay::PeerId;
use gotalk::relay::{Bus, Group, Mailbox, Member, Note, Undeliverable};
use gotalk_cluster::nats::NatsLink;
use gotalk_cluster::redis::RedisLink;
use gotalk_cluster::{ClusterBus, ClusterSettings, Link};
use gotalk_tests::conformance::{eventually, within, BusServer, WAIT};
use gotalk_tests::servers::Auth;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What a relay costs of the outbound bound besides its payload: the envelope's header.
const DELIVER_HEADER: usize = 22;

/// Nothing periodic touches the bus during a case, and a relay waits long for its answer.
fn quiet() -> ClusterSettings {
    ClusterSettings::default()
        .heartbeat(Duration::from_secs(60))
        .presence_expiry(Duration::from_secs(180))
        .probe(Duration::from_secs(60), Duration::from_secs(60))
        .relay_timeout(Duration::from_secs(5))
}

fn redis_link(url: &str) -> RedisLink {
    RedisLink::new(url).expect("a redis url")
}

fn nats_link(url: &str) -> NatsLink {
    NatsLink::new(url).expect("a nats url")
}

async fn start(link: impl Link, settings: ClusterSettings) -> Arc<ClusterBus> {
    within("the bus starts", ClusterBus::start(link, settings)).await.expect("the bus starts")
}

fn peer_id(n: u8) -> PeerId {
    PeerId::from_random([n; 16])
}

/// A peer registered on `bus`, reachable from every instance once this returns.
async fn recipient(bus: &ClusterBus, n: u8) -> (PeerId, Mailbox) {
    let (id, mailbox) = (peer_id(n), Mailbox::new(64 << 20));
    within("register", bus.register(id, mailbox.clone())).await;
    (id, mailbox)
}

fn payload(len: usize) -> Bytes {
    Bytes::from(vec![b'x'; len])
}

/// Hands `count` relays of `len` bytes to `bus` for `to`, each left waiting in a task.
fn send_waiting(
    bus: &Arc<ClusterBus>,
    to: PeerId,
    count: usize,
    len: usize,
) -> Vec<JoinHandle<Result<(), Undeliverable>>> {
    (0..count).map(|_| tokio::spawn(bus.deliver(to, payload(len)))).collect()
}

/// With the bus paused, the relays of `waiting` hold what they took of a limit: one more
/// relay is "unavailable" at once and counted; a group publish is refused and counted when
/// `publish_refused`. After the bus resumes, every waiting relay is delivered and the limit is
/// free again.
async fn one_past_is_refused(
    server: &mut dyn BusServer,
    a: &Arc<ClusterBus>,
    to: PeerId,
    waiting: Vec<JoinHandle<Result<(), Undeliverable>>>,
    publish_refused: bool,
) {
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(waiting.iter().all(|w| !w.is_finished()), "the relays at the limit wait for the bus");
    let before = a.metrics();
    let started = Instant::now();
    let past = within("one past the limit", a.deliver(to, Bytes::new())).await;
    assert_eq!(past, Err(Undeliverable::Unavailable));
    assert!(started.elapsed() < Duration::from_millis(100), "at once: {:?}", started.elapsed());
    let group = Group::new("edge").unwrap();
    let note = || Note::new("note", Bytes::from_static(b"1")).unwrap();
    if publish_refused {
        assert_eq!(a.publish(&group, note()), Err(Undeliverable::Unavailable));
    }
    let after = a.metrics();
    assert_eq!(after.relays.unavailable, before.relays.unavailable + 1);
    let refused = u64::from(publish_refused);
    assert_eq!(after.dropped.unpublished, before.dropped.unpublished + refused);
    server.resume();
    for w in waiting {
        assert_eq!(
            within("a waiting relay", w).await.unwrap(),
            Ok(()),
            "delivered after the pause"
        );
    }
    // Given back: the limit takes as much again.
    let again = send_waiting(a, to, 1, 1);
    for w in again {
        assert_eq!(within("after", w).await.unwrap(), Ok(()));
    }
    assert_eq!(a.publish(&group, note()), Ok(()));
}

/// The outbound bound holds relays whose answers have not come: at exactly the bound they
/// are all handed over, one byte more is "unavailable" at once, and a group publish is
/// refused and counted as unpublished.
async fn outbound_bytes_edge<L: Link>(server: &mut dyn BusServer, link: impl Fn() -> L) {
    const LEN: usize = 1000;
    const AT_ONCE: usize = 3;
    let limit = AT_ONCE * (LEN + DELIVER_HEADER);
    let a = start(link(), quiet().outbound_bytes(limit)).await;
    let b = start(link(), quiet()).await;
    let (to, mailbox) = recipient(&b, 1).await;
    assert_eq!(within("before", a.deliver(to, payload(LEN))).await, Ok(()));

    server.pause();
    let waiting = send_waiting(&a, to, AT_ONCE, LEN);
    one_past_is_refused(server, &a, to, waiting, true).await;
    assert_eq!(mailbox.queued_bytes(), (AT_ONCE + 1) * LEN + 1, "every relay that fit arrived");
    a.shutdown().await;
    b.shutdown().await;
}

/// Relays waiting for their answers: `max_pending` of them wait, the next is "unavailable"
/// at once.
async fn max_pending_edge<L: Link>(server: &mut dyn BusServer, link: impl Fn() -> L) {
    const AT_ONCE: usize = 3;
    let a = start(link(), quiet().max_pending(AT_ONCE)).await;
    let b = start(link(), quiet()).await;
    let (to, _mailbox) = recipient(&b, 2).await;
    assert_eq!(within("before", a.deliver(to, payload(1))).await, Ok(()));

    server.pause();
    let waiting = send_waiting(&a, to, AT_ONCE, 1);
    one_past_is_refused(server, &a, to, waiting, false).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Messages from the bus wait in a bounded queue for the instance's one consumer. A burst of
/// `burst` group messages from another instance, arriving while the consumer cannot run (the
/// test's runtime has one thread, and the bus client's reader hands over all it read before
/// yielding): with room for the whole burst none is lost; with room for one, the rest of what
/// arrives together is dropped, and every message is either delivered or counted.
async fn incoming_queue_edge<L: Link>(queue: usize, burst: usize, link: impl Fn() -> L) -> u64 {
    let a = start(link(), quiet()).await;
    let b = start(link(), quiet().incoming_queue(queue)).await;
    let (id, mailbox) = recipient(&b, 3).await;
    let group = Group::new("burst").unwrap();
    b.join(&group, Member { peer: id, meta: Bytes::from_static(b"{}") });
    // Done once the group's channel is subscribed.
    within("subscribed", b.history(&group)).await;
    let note = || Note::new("note", Bytes::from_static(b"1")).unwrap();
    a.publish(&group, note()).expect("published");
    eventually("the first note", WAIT, || mailbox.queued_bytes() > 0).await;
    let one = mailbox.queued_bytes();
    let dropped_before = b.metrics().dropped.overflow;

    for _ in 0..burst {
        a.publish(&group, note()).expect("published");
    }
    let dropped = || b.metrics().dropped.overflow - dropped_before;
    let delivered = || mailbox.queued_bytes() / one - 1;
    let settled = Instant::now() + WAIT;
    while delivered() + dropped() as usize != burst {
        assert!(
            Instant::now() < settled,
            "nothing lost uncounted: {} delivered, {} dropped of {burst}",
            delivered(),
            dropped()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
    dropped()
}

/// A bus that stops answering without closing anything (SIGSTOP, longer than the probe):
/// with nothing else to send, only the probe can find it; the instance reports itself down,
/// and after the bus resumes it reconnects, resubscribes and counts a recovery.
async fn the_probe_finds_a_silent_bus<L: Link>(server: &mut dyn BusServer, link: impl Fn() -> L) {
    let probing = quiet()
        .probe(Duration::from_millis(300), Duration::from_millis(300))
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .connect_timeout(Duration::from_secs(1));
    let a = start(link(), probing.clone()).await;
    let b = start(link(), probing).await;
    let (to, _mailbox) = recipient(&b, 4).await;
    assert_eq!(within("before", a.deliver(to, payload(1))).await, Ok(()));
    let mut state = a.state();
    let recoveries = state.borrow().recoveries;

    server.pause();
    let paused = Instant::now();
    // Not the guard `wait_for` returns: held, it would keep the bus from reporting itself.
    let down = state.wait_for(|s| !s.up);
    let found = tokio::time::timeout(Duration::from_secs(3), down).await.is_ok_and(|r| r.is_ok());
    let took = paused.elapsed();
    // Still paused: the next step's recovery cannot be the probe's doing by chance.
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(took)).await;
    server.resume();
    assert!(found, "the silent bus was not found within 3 s");
    eprintln!("found the silent bus {took:?} after it stopped");
    for bus in [&a, &b] {
        let mut state = bus.state();
        let back = state.wait_for(|s| s.up && s.recoveries > recoveries);
        assert!(within("up again, with a recovery", back).await.is_ok());
    }
    assert_eq!(a.metrics().recoveries, recoveries + 1);
    assert_eq!(within("after", a.deliver(to, payload(1))).await, Ok(()), "resubscribed");
    a.shutdown().await;
    b.shutdown().await;
}

macro_rules! on_a_bus {
    ($bus:ident, $server:ty, $link:path, $link_type:ty, $limited:expr) => {
        mod $bus {
            use super::*;

            type Server = $server;

            fn maker(url: String) -> impl Fn() -> $link_type {
                move || $link(&url)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn outbound_bytes_at_and_past_the_limit() {
                if gotalk_tests::servers::skip_cluster_tests() {
                    return;
                }
                let mut server = Server::start().await;
                let link = maker(server.url());
                outbound_bytes_edge(&mut server, link).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn max_pending_at_and_past_the_limit() {
                if gotalk_tests::servers::skip_cluster_tests() {
                    return;
                }
                let mut server = Server::start().await;
                let link = maker(server.url());
                max_pending_edge(&mut server, link).await;
            }

            /// One thread: see `incoming_queue_edge`.
            #[tokio::test(flavor = "current_thread")]
            async fn incoming_queue_at_and_past_the_limit() {
                if gotalk_tests::servers::skip_cluster_tests() {
                    return;
                }
                const BURST: usize = 500;
                let server = Server::start().await;
                let dropped = incoming_queue_edge(BURST, BURST, maker(server.url())).await;
                assert_eq!(dropped, 0, "a queue as long as the burst loses nothing");
                let dropped = incoming_queue_edge(1, BURST, maker(server.url())).await;
                assert!(dropped > 0, "a queue of one drops what arrives together");
                eprintln!("{}: a queue of one dropped {dropped} of {BURST}", stringify!($bus));
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_probe_finds_a_silent_bus() {
                if gotalk_tests::servers::skip_cluster_tests() {
                    return;
                }
                let mut server = Server::start().await;
                let link = maker(server.url());
                super::the_probe_finds_a_silent_bus(&mut server, link).await;
            }

            /// The link names channels of its own (reply channels, inboxes) under the
            /// cluster's prefix, left at its default here: a user limited to the cluster's
            /// prefix is all the instances need.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_link_takes_the_cluster_prefix() {
                if gotalk_tests::servers::skip_cluster_tests() {
                    return;
                }
                let limited: fn(Auth) -> Pin<Box<dyn Future<Output = Server> + Send>> = $limited;
                let server = limited(Auth::new("chat")).await;
                let settings = || quiet().prefix("chat");
                let a = start($link(&server.url()), settings()).await;
                let b = start($link(&server.url()), settings()).await;
                let (to, mailbox) = recipient(&b, 5).await;
                assert_eq!(within("a relay", a.deliver(to, payload(7))).await, Ok(()));
                assert_eq!(mailbox.queued_bytes(), 7);
                a.shutdown().await;
                b.shutdown().await;
            }
        }
    };
}

on_a_bus!(redis, gotalk_tests::servers::Redis, super::redis_link, RedisLink, |auth| Box::pin(
    gotalk_tests::servers::Redis::start_with(auth)
));
on_a_bus!(nats, gotalk_tests::servers::Nats, super::nats_link, NatsLink, |auth| Box::pin(
    gotalk_tests::servers::Nats::start_with(auth, "chat")
));
