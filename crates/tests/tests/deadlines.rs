//! Deadlines on this side's calls (per call and per connection, single and streaming), what
//! happens to a result that comes after one, and what a server does with the handlers of a
//! caller that is gone. Over real TCP on 127.0.0.1.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{connect, connect_with, start, within};
use gotalk::{Config, Error, Handlers};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Sends on its channel when dropped: a handler holding one was dropped (or finished).
struct Dropped(mpsc::UnboundedSender<&'static str>, &'static str);

impl Drop for Dropped {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

/// Waits until `sock` has counted `n` late results.
async fn late_results(sock: &gotalk::Sock, n: u64) {
    within("late results", async {
        while sock.late_results() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(sock.late_results(), n);
}

// The paused clock jumps straight to the deadline: the server never answers and nothing else
// is due before it (the first liveness probe is 15 s away).
#[tokio::test(start_paused = true)]
async fn a_call_past_its_deadline_fails_with_timeout_and_frees_its_entry() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    let started = Instant::now();
    let outcome = client.with_timeout(Duration::from_secs(2)).buffer_request("never", "").await;
    assert!(
        matches!(outcome, Err(Error::Timeout(d)) if d == Duration::from_secs(2)),
        "{outcome:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(outcome.unwrap_err().to_string(), "no result within 2s; the call was abandoned");
    // `end` waits for the calls in flight: it returns, so the entry is gone.
    within("end", client.end()).await;
}

#[tokio::test]
async fn a_late_result_is_dropped_and_counted_and_the_connection_goes_on() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    let slow = client
        .with_timeout(Duration::from_millis(50))
        .request::<_, serde_json::Value>("sleep", &serde_json::json!({ "ms": 300 }))
        .await;
    assert!(matches!(slow, Err(Error::Timeout(_))), "{slow:?}");
    assert_eq!(client.late_results(), 0);
    // The answer comes 250 ms later, for an id no call waits for any more.
    late_results(&client, 1).await;
    assert!(!client.is_closed());
    let echoed = within("echo", client.buffer_request("echo", "still here")).await.unwrap();
    assert_eq!(echoed, Bytes::from("still here"));
    assert_eq!(client.late_results(), 1);
}

#[tokio::test]
async fn the_connection_default_bounds_single_calls_at_its_edge_and_a_call_may_lift_it() {
    let server = start(common::handlers(), Config::default()).await;
    let config = Config::default().request_timeout(Some(Duration::from_millis(400)));
    let client = connect_with(server.addr, Handlers::new(), config).await;
    let sleep = |ms: u64| serde_json::json!({ "ms": ms });

    // Answered well within the default: passes.
    let (ms100, ms700) = (sleep(100), sleep(700));
    let quick = within("quick", client.request::<_, serde_json::Value>("sleep", &ms100));
    quick.await.expect("a call answered within the default timeout");
    // Answered well after it: times out with the default's value.
    let slow = within("slow", client.request::<_, serde_json::Value>("sleep", &sleep(700))).await;
    assert!(matches!(slow, Err(Error::Timeout(d)) if d == Duration::from_millis(400)), "{slow:?}");
    // buffer_request has the same default.
    let slow = within("slow", client.buffer_request("sleep", r#"{"ms":700}"#)).await;
    assert!(matches!(slow, Err(Error::Timeout(_))), "{slow:?}");
    // One call may have no deadline, or a longer one.
    let lifted = client.with_timeout(None).request::<_, serde_json::Value>("sleep", &ms700);
    within("lifted", lifted).await.expect("no deadline for this call");
    let longer =
        client.with_timeout(Duration::from_secs(2)).buffer_request("sleep", r#"{"ms":700}"#);
    within("longer", longer).await.expect("a longer deadline for this call");
}

#[tokio::test]
async fn a_deadline_bounds_the_retries_too() {
    // One slot per connection, held; the second call is answered with RetryResults every
    // 100 ms.
    let config = Config::default()
        .request_limit(1)
        .retry_wait(Duration::from_millis(100), Duration::from_millis(100));
    let server = start(common::handlers(), config).await;
    let client =
        connect_with(server.addr, Handlers::new(), Config::default().max_retries(1000)).await;
    let holder = client.clone();
    let hold = tokio::spawn(async move { holder.buffer_request("sleep", r#"{"ms":3000}"#).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = std::time::Instant::now();
    let turned_away = client.with_timeout(Duration::from_millis(450)).buffer_request("echo", "x");
    let outcome = within("turned away", turned_away).await;
    assert!(matches!(outcome, Err(Error::Timeout(_))), "{outcome:?}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(450) && took < Duration::from_millis(1500), "{took:?}");
    hold.abort();
}

#[tokio::test]
async fn a_streaming_call_past_its_deadline_ends_both_ways() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    let (mut request, mut response) = client
        .with_timeout(Duration::from_millis(300))
        .stream_request("stream-echo", "one")
        .await
        .unwrap();
    assert_eq!(within("first part", response.next()).await.unwrap(), Some(Bytes::from("one")));
    let outcome = within("deadline", response.next()).await;
    assert!(matches!(outcome, Err(Error::Timeout(_))), "{outcome:?}");
    // The request stream was ended with it, while this side held its writer: the echo handler
    // saw the end of its input and ended its result, which arrives late.
    late_results(&client, 1).await;
    let write = request.write("two").await;
    assert!(matches!(write, Err(Error::Timeout(_))), "{write:?}");
    assert!(matches!(request.end().await, Err(Error::Timeout(_))));
    // The server's stream slot is free again: the connection has nothing in flight.
    within("end", client.end()).await;
}

#[tokio::test]
async fn a_streaming_call_finished_before_its_deadline_is_not_touched_by_it() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    let (mut request, response) = client
        .with_timeout(Duration::from_millis(200))
        .stream_request("stream-echo", "one")
        .await
        .unwrap();
    request.write("two").await.unwrap();
    request.end().await.unwrap();
    let all = within("collect", response.collect()).await.unwrap();
    assert_eq!(all, Bytes::from("onetwo"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.late_results(), 0);
    assert!(matches!(request.write("three").await, Err(Error::StreamEnded)));
}

#[tokio::test]
async fn a_stream_without_a_deadline_ignores_the_connection_default() {
    let server = start(common::handlers(), Config::default()).await;
    let config = Config::default().request_timeout(Some(Duration::from_millis(100)));
    let client = connect_with(server.addr, Handlers::new(), config).await;

    let (mut request, mut response) = client.stream_request("stream-echo", "one").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    request.write("two").await.unwrap();
    request.end().await.unwrap();
    assert_eq!(within("1", response.next()).await.unwrap(), Some(Bytes::from("one")));
    assert_eq!(within("2", response.next()).await.unwrap(), Some(Bytes::from("two")));
    assert_eq!(within("end", response.next()).await.unwrap(), None);
}

/// A server whose `hold` and `hold-stream` handlers never answer and tell, through `tx`,
/// when they start and when their futures are dropped.
fn holding_handlers(tx: mpsc::UnboundedSender<&'static str>) -> Handlers {
    let mut handlers = Handlers::new();
    let stream_tx = tx.clone();
    handlers
        .handle_buffer("hold", move |_sock, _payload| {
            let tx = tx.clone();
            async move {
                let _guard = Dropped(tx.clone(), "hold dropped");
                let _ = tx.send("hold started");
                std::future::pending::<()>().await;
                Ok::<_, String>(Bytes::new())
            }
        })
        .handle_stream("hold-stream", move |_sock, mut input, _output| {
            let tx = stream_tx.clone();
            async move {
                let _guard = Dropped(tx.clone(), "hold-stream dropped");
                let _ = tx.send("hold-stream started");
                // Reads on, and would wait past the end of its input for as long as it likes.
                while input.next().await.ok().flatten().is_some() {}
                std::future::pending::<()>().await;
                Ok::<_, String>(())
            }
        });
    handlers
}

#[tokio::test]
async fn a_caller_that_gives_up_leaves_the_handler_running_until_it_disconnects() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = start(holding_handlers(tx), Config::default()).await;
    let client = connect(server.addr).await;

    let single = client.with_timeout(Duration::from_millis(100)).buffer_request("hold", "");
    assert!(matches!(single.await, Err(Error::Timeout(_))));
    let (mut request, mut response) = client
        .with_timeout(Duration::from_millis(100))
        .stream_request("hold-stream", "x")
        .await
        .unwrap();
    assert!(matches!(within("stream", response.next()).await, Err(Error::Timeout(_))));
    assert!(matches!(request.write("y").await, Err(Error::Timeout(_))));
    let mut started = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
    started.sort_unstable();
    assert_eq!(started, ["hold started", "hold-stream started"]);

    // The protocol has no cancel message: the server's handlers run on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.try_recv().is_err(), "a handler was dropped while its caller was connected");

    // Once the caller is gone, the server drops both handlers' futures.
    client.close();
    let mut dropped =
        vec![within("drop", rx.recv()).await.unwrap(), within("drop", rx.recv()).await.unwrap()];
    dropped.sort_unstable();
    assert_eq!(dropped, ["hold dropped", "hold-stream dropped"]);
}

#[tokio::test]
async fn a_caller_whose_process_dies_has_its_handler_dropped() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = start(holding_handlers(tx), Config::default()).await;
    // A raw peer: its socket is dropped without a gotalk close, as a killed process's is.
    let mut peer = common::WirePeer::connect(server.addr).await;
    peer.send(&common::request(b"0001", "hold", b"")).await;
    assert_eq!(within("start", rx.recv()).await, Some("hold started"));
    drop(peer);
    assert_eq!(within("drop", rx.recv()).await, Some("hold dropped"));
}
