//! Liveness over real sockets: a TCP proxy that starts swallowing traffic (a half-open
//! connection) is detected by both ends within the probes' bound, pending requests fail with a
//! timeout error; a peer that said `$done` may not send another request.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{connect, connect_with, start, within, WirePeer};
use gotalk::protocol::{Frame, Id};
use gotalk::{CloseReason, Config, Error, Handlers, LivenessConfig, LivenessEvent};

/// Probes after 200 ms of silence, two unanswered allowed: dead within 600 ms.
fn fast() -> Config {
    let mut config = Config::default();
    let liveness = LivenessConfig {
        interval: Some(Duration::from_millis(200)),
        max_unacked: 2,
        heartbeat_interval: None,
        ..LivenessConfig::gateway_default()
    };
    config = config.liveness(liveness).expect("valid");
    config
}

#[tokio::test]
async fn a_half_open_connection_is_detected_by_both_ends_within_the_bound() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut handlers = common::handlers();
    let seen = events.clone();
    handlers.on_liveness(move |_sock, event| seen.lock().unwrap().push(event));
    let server = start(handlers, fast()).await;
    let proxy = Proxy::start(server.addr).await;
    let client = connect_with(proxy.addr, Handlers::new(), fast()).await;
    let server_side = within("server side", server.only_connection()).await;

    // Idle but healthy: probes go out and come back, for a while.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!client.is_closed() && !server_side.is_closed());
    assert!(client.probe_rtt().is_some(), "the client measured a probe's round trip");
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, LivenessEvent::Acked { verified: true, .. })));

    // The network goes silent. A request is in flight when it does.
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.buffer_request("never", "").await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    proxy.swallow();
    let cut = Instant::now();

    let client_reason = within("client detects", client.closed()).await;
    let client_after = cut.elapsed();
    let server_reason = within("server detects", server_side.closed()).await;
    let server_after = cut.elapsed();
    for (who, reason, after) in
        [("client", &client_reason, client_after), ("server", &server_reason, server_after)]
    {
        assert!(matches!(reason, CloseReason::PeerDead(_)), "{who}: {reason:?}");
        // The bound is 600 ms from the last byte received (a little before the cut); the
        // rest is slack for a loaded 2-core CI machine. The measured time is printed.
        assert!(after < Duration::from_millis(1200), "{who} took {after:?}");
        eprintln!("{who} detected the half-open connection after {after:?} (bound 600 ms)");
    }
    match within("pending request", pending).await.unwrap() {
        Err(Error::Closed(reason)) => assert!(reason.is_timeout(), "{reason:?}"),
        other => panic!("expected a timeout error, got {other:?}"),
    }
    assert!(events.lock().unwrap().iter().any(|e| matches!(e, LivenessEvent::Dead(_))));
}

#[tokio::test]
async fn a_request_after_done_is_a_protocol_error() {
    let server = start(common::handlers(), Config::default()).await;
    let mut peer = WirePeer::connect(server.addr).await;
    peer.write(b"n005$done00000000").await;
    peer.write(b"r0001004echo00000002hi").await;
    // `$done` shows the peer is one of ours: the server says its hello back.
    peer.expect_end_with(b"R$hi!00000000f00000002").await;
}

#[tokio::test]
async fn ping_is_answered_past_the_request_limit() {
    let config = Config::default().request_limit(1);
    let server = start(common::handlers(), config).await;
    let mut peer = WirePeer::connect(server.addr).await;
    // The only slot is taken by a request that never ends; the probe is still echoed.
    peer.write(b"r0001005never00000000").await;
    peer.write(b"r0002005$ping00000008cookie42").await;
    // A `$ping` shows the peer is one of ours: the server says its hello back first.
    let hello = within("hello", peer.frame()).await;
    assert_eq!(hello, gotalk::protocol::reserved::hello());
    let echo = within("echo", peer.frame()).await;
    assert_eq!(echo, Frame::SingleResult { id: Id(*b"0002"), payload: "cookie42".into() });
}

/// A client that records the server's `$done` and takes no retries of its own.
async fn watching_client(
    addr: std::net::SocketAddr,
) -> (gotalk::Sock, tokio::sync::watch::Receiver<bool>) {
    let (done_tx, done) = tokio::sync::watch::channel(false);
    let mut handlers = Handlers::new();
    handlers.on_liveness(move |_sock, event| {
        if event == LivenessEvent::Done {
            let _ = done_tx.send(true);
        }
    });
    let config = Config::default().max_retries(0);
    (connect_with(addr, handlers, config).await, done)
}

/// A server with `config` draining while a client's 300 ms request is in flight: the client,
/// its request, and the drain, started once the client has heard `$done`.
async fn draining(
    config: Config,
) -> (gotalk::Sock, tokio::task::JoinHandle<Result<u64, Error>>, tokio::task::JoinHandle<()>) {
    let server = start(common::handlers(), config).await;
    let (client, mut done) = watching_client(server.addr).await;
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, u64>("sleep", &300).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopping = tokio::spawn(server.stop());
    within("$done", done.wait_for(|d| *d)).await.unwrap();
    (client, in_flight, stopping)
}

#[tokio::test]
async fn a_draining_server_answers_what_is_in_flight_and_asks_new_requests_to_retry() {
    let (client, in_flight, stopping) = draining(Config::default()).await;
    match within("request during the drain", client.request::<_, u64>("sleep", &0)).await {
        Err(Error::Retry { message, .. }) => assert_eq!(message, "shutting down"),
        other => panic!("expected a RetryResult, got {other:?}"),
    }
    assert_eq!(within("in flight", in_flight).await.unwrap().unwrap(), 300);
    within("drained", stopping).await.unwrap();
    assert_eq!(within("closed", client.closed()).await, CloseReason::PeerClosed);
}

#[tokio::test]
async fn a_draining_server_still_serves_a_peer_that_cannot_retry() {
    let config = Config::default().peer_understands_retry(false);
    let (client, in_flight, stopping) = draining(config).await;
    let during = within("during the drain", client.request::<_, u64>("sleep", &10)).await;
    assert_eq!(during.unwrap(), 10);
    assert_eq!(within("in flight", in_flight).await.unwrap().unwrap(), 300);
    within("drained", stopping).await.unwrap();
}

#[tokio::test]
async fn ouroboros_cadence_probes_through_traffic_and_a_silent_peer_fails_the_response_timeout() {
    // Ouroboros' shape, scaled down: a probe every 200 ms whatever the traffic, each to be
    // answered within 100 ms.
    let mut config = Config::default();
    let liveness = LivenessConfig {
        interval: Some(Duration::from_millis(200)),
        max_unacked: 1,
        response_timeout: Some(Duration::from_millis(100)),
        activity_suppresses_probes: false,
        heartbeat_interval: None,
        ..LivenessConfig::ouroboros()
    };
    config = config.liveness(liveness).expect("valid");
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut handlers = common::handlers();
    let seen = events.clone();
    handlers.on_liveness(move |_sock, event| seen.lock().unwrap().push((Instant::now(), event)));
    let server = start(handlers, config).await;
    let proxy = Proxy::start(server.addr).await;
    let client = connect(proxy.addr).await;
    let server_side = within("server side", server.only_connection()).await;

    // Busy traffic does not hold the probes back.
    let busy = Instant::now();
    while busy.elapsed() < Duration::from_millis(900) {
        client.buffer_request("echo", "x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    {
        let events = events.lock().unwrap();
        let sent = events.iter().filter(|(_, e)| matches!(e, LivenessEvent::ProbeSent(_))).count();
        assert!(sent >= 3, "{sent} probes in 900 ms of traffic: {events:?}");
        assert!(!events.iter().any(|(_, e)| *e == LivenessEvent::Suppressed), "{events:?}");
    }

    proxy.swallow();
    let cut = Instant::now();
    let reason = within("server detects", server_side.closed()).await;
    let after = cut.elapsed();
    assert!(matches!(reason, CloseReason::PeerDead(_)), "{reason:?}");
    // The next probe goes out within 200 ms, and fails 100 ms later: 300 ms at most, plus
    // slack for a loaded machine.
    assert!(after < Duration::from_millis(900), "took {after:?}");
    eprintln!("ouroboros cadence: dead {after:?} after the cut (bound 300 ms)");
    let events = events.lock().unwrap();
    assert!(
        events.iter().any(|(_, e)| matches!(
            e,
            LivenessEvent::Dead(gotalk::protocol::liveness::Death::ProbeTimeout(_))
        )),
        "{events:?}"
    );
}
