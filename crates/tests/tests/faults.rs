//! The known faults of the reference peers (PROTOCOL-NOTES, "Known faults"), one test each,
//! showing this implementation does not have them. Each is driven over real TCP, mostly by a
//! raw wire peer that sends exactly the bytes that break Go or gotalk.js.
//!
//! The handshake timeout the Go reader lacks is tested in `timeouts.rs`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{connect, start, within, WirePeer};
use gotalk::protocol::{Frame, Id};
use gotalk::Config;
use tokio::sync::{mpsc, Notify};

#[tokio::test]
async fn a_request_id_already_in_flight_is_answered_with_an_error_and_the_connection_goes_on() {
    let server = start(common::handlers(), Config::default()).await;
    // A well-behaved client with a request in flight on another connection.
    let client = connect(server.addr).await;
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, u64>("sleep", &300).await }
    });

    let mut peer = WirePeer::connect(server.addr).await;
    peer.send(&common::stream_request(b"!000", "stream-echo", b"a")).await;
    assert_eq!(peer.frame().await, Frame::StreamResult { id: Id(*b"!000"), payload: "a".into() });
    // The same id again while the first stream is still open: an ErrorResult, as Go
    // answers both, and the first stream carries on.
    peer.send(&common::stream_request(b"!000", "stream-echo", b"b")).await;
    let Frame::ErrorResult { id, payload } = peer.frame().await else { panic!("not an error") };
    assert_eq!((id, &payload[..]), (Id(*b"!000"), &b"request id !000 is already in flight"[..]));
    peer.send(&Frame::StreamRequestPart { id: Id(*b"!000"), payload: "c".into() }).await;
    assert_eq!(peer.frame().await, Frame::StreamResult { id: Id(*b"!000"), payload: "c".into() });
    peer.send(&Frame::StreamRequestPart { id: Id(*b"!000"), payload: Bytes::new() }).await;
    assert_eq!(peer.frame().await, Frame::StreamResult { id: Id(*b"!000"), payload: Bytes::new() });

    // The same for a single request id reused while in flight.
    peer.send(&common::request(b"0001", "sleep", b"200")).await;
    peer.send(&common::request(b"0001", "echo", b"twice")).await;
    let Frame::ErrorResult { id, .. } = peer.frame().await else { panic!("not an error") };
    assert_eq!(id, Id(*b"0001"));
    let Frame::SingleResult { id, payload } = peer.frame().await else { panic!("no result") };
    assert_eq!((id, &payload[..]), (Id(*b"0001"), &b"200"[..]));

    // The other connection never noticed, and the peer is still served.
    assert_eq!(within("in-flight request", in_flight).await.unwrap().unwrap(), 300);
    peer.send(&common::request(b"0002", "echo", b"ok")).await;
    assert_eq!(peer.frame().await, Frame::SingleResult { id: Id(*b"0002"), payload: "ok".into() });
}

#[tokio::test]
async fn a_stream_request_with_an_empty_first_part_has_ended_its_input() {
    // What gotalk.js sends for `streamRequest(op).end()` with nothing written: an `s` with an
    // empty payload and no `p` after it.
    let server = start(common::handlers(), Config::default()).await;
    let mut peer = WirePeer::connect(server.addr).await;
    peer.send(&common::stream_request(b"!001", "stream-echo", b"")).await;
    let ended = within("the end of the result", peer.frame()).await;
    assert_eq!(ended, Frame::StreamResult { id: Id(*b"!001"), payload: Bytes::new() });
    // A Rust client that opens a stream with nothing and writes later still streams.
    let client = connect(server.addr).await;
    let (mut request, response) = client.stream_request("stream-echo", "").await.unwrap();
    request.write("later").await.unwrap();
    request.end().await.unwrap();
    assert_eq!(&within("collect", response.collect()).await.unwrap()[..], b"later");
    let (mut request, response) = client.stream_request("stream-echo", "").await.unwrap();
    request.end().await.unwrap();
    assert_eq!(&within("collect", response.collect()).await.unwrap()[..], b"");
}

#[tokio::test]
async fn an_id_may_be_reused_once_its_request_is_answered() {
    let server = start(common::handlers(), Config::default()).await;
    let mut peer = WirePeer::connect(server.addr).await;
    for round in 0..3 {
        let payload = format!("round {round}");
        peer.send(&common::request(b"\0\0\0\0", "echo", payload.as_bytes())).await;
        assert_eq!(
            peer.frame().await,
            Frame::SingleResult { id: Id([0; 4]), payload: Bytes::from(payload) }
        );
        peer.send(&common::stream_request(b"!000", "stream-echo", b"s")).await;
        peer.send(&Frame::StreamRequestPart { id: Id(*b"!000"), payload: Bytes::new() }).await;
        assert_eq!(
            peer.frame().await,
            Frame::StreamResult { id: Id(*b"!000"), payload: "s".into() }
        );
        assert_eq!(
            peer.frame().await,
            Frame::StreamResult { id: Id(*b"!000"), payload: Bytes::new() }
        );
    }
}

#[tokio::test]
async fn equal_min_and_max_retry_wait_keeps_serving() {
    let config = Config::default()
        .request_limit(2)
        .retry_wait(Duration::from_millis(20), Duration::from_millis(20));
    let server = start(common::handlers(), config).await;
    let client_config = Config::default().max_retries(100);
    let client = common::connect_with(server.addr, gotalk::Handlers::new(), client_config).await;

    // Far past the limit, over and over: every request is retried after exactly the wait
    // and gets through in the end.
    let calls = (0..12u64).map(|i| {
        let client = client.clone();
        async move { client.request::<_, u64>("sleep", &(10 + i)).await }
    });
    let results = within("requests past the limit", futures_util::future::join_all(calls)).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), 10 + i as u64);
    }
    // On the wire, the wait is exactly the configured value.
    let mut peer = WirePeer::connect(server.addr).await;
    peer.send(&common::request(b"0001", "sleep", b"200")).await;
    peer.send(&common::request(b"0002", "sleep", b"200")).await;
    peer.send(&common::request(b"0003", "sleep", b"1")).await;
    assert_eq!(
        peer.frame().await,
        Frame::RetryResult { id: Id(*b"0003"), wait: 20, payload: "request rate limit".into() }
    );
    assert_eq!(&client.buffer_request("echo", "alive").await.unwrap()[..], b"alive");
}

#[tokio::test]
async fn empty_name_notification_reaches_the_fallback_and_the_stream_stays_in_sync() {
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Bytes)>();
    let mut handlers = common::handlers();
    handlers.fallback_notification(move |_sock, name: String, payload: Bytes| {
        let tx = tx.clone();
        async move {
            let _ = tx.send((name, payload));
        }
    });
    let server = start(handlers, Config::default()).await;
    let mut peer = WirePeer::connect(server.addr).await;

    // `n` + name length 000 + no name + size + payload, then a request right behind it.
    peer.write(b"n00000000005hello").await;
    peer.write(b"n00000000000").await;
    peer.write(b"r0001004echo00000002ok").await;
    assert_eq!(peer.frame().await, Frame::SingleResult { id: Id(*b"0001"), payload: "ok".into() });
    assert_eq!(within("first", rx.recv()).await.unwrap(), (String::new(), Bytes::from("hello")));
    assert_eq!(within("second", rx.recv()).await.unwrap(), (String::new(), Bytes::new()));

    // The Rust client can send one too.
    let client = connect(server.addr).await;
    client.buffer_notify("", "from rust").await.unwrap();
    assert_eq!(
        within("third", rx.recv()).await.unwrap(),
        (String::new(), Bytes::from("from rust"))
    );
}

#[tokio::test]
async fn four_gib_declared_payload_is_refused_from_the_header_alone() {
    let server = start(common::handlers(), Config::default()).await;
    // Every message type that carries a payload, each declaring 0xffffffff bytes and sending
    // none. The answer must come at once: nothing waits for (or allocates) the payload.
    let headers: [&[u8]; 8] = [
        b"r0001004echoffffffff",
        b"s0001004echoffffffff",
        b"p0001ffffffff",
        b"R0001ffffffff",
        b"S0001ffffffff",
        b"E0001ffffffff",
        b"e000100000000ffffffff",
        b"n004noteffffffff",
    ];
    for header in headers {
        let mut peer = WirePeer::connect(server.addr).await;
        peer.write(header).await;
        let rest = tokio::time::timeout(Duration::from_secs(1), peer.read_to_end())
            .await
            .unwrap_or_else(|_| panic!("no prompt answer to {}", String::from_utf8_lossy(header)));
        assert_eq!(rest, b"f00000002", "answer to {}", String::from_utf8_lossy(header));
    }
    // Uppercase hex is accepted, and refused just the same.
    let mut peer = WirePeer::connect(server.addr).await;
    peer.write(b"r0001004echoFFFFFFFF").await;
    peer.expect_end_with(b"f00000002").await;

    let client = connect(server.addr).await;
    assert_eq!(&client.buffer_request("echo", "fine").await.unwrap()[..], b"fine");
}

#[tokio::test]
async fn parse_errors_send_a_protocol_error_before_closing() {
    let server = start(common::handlers(), Config::default()).await;
    let bad: [&[u8]; 6] = [
        b"x",                        // not a message type
        b"r0001zz",                  // bad hex in the name length
        b"r0001004echo0000000g",     // bad hex in the size
        b"r0001002\xff\xfe00000000", // a name that is not UTF-8
        b"h00zz",                    // bad hex in a heartbeat
        b"\0",                       // a NUL where a type byte belongs
    ];
    for bytes in bad {
        let mut peer = WirePeer::connect(server.addr).await;
        peer.write(bytes).await;
        let rest = peer.read_to_end().await;
        assert_eq!(
            String::from_utf8_lossy(&rest),
            "f00000002",
            "answer to {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // After good messages, too.
    let mut peer = WirePeer::connect(server.addr).await;
    peer.write(b"r0001004echo00000002hi").await;
    assert_eq!(peer.frame().await, Frame::SingleResult { id: Id(*b"0001"), payload: "hi".into() });
    peer.write(b"X").await;
    peer.expect_end_with(b"f00000002").await;
}

#[tokio::test]
async fn version_mismatch_sends_unsupported_before_closing() {
    let server = start(common::handlers(), Config::default()).await;
    let mut peer = WirePeer::connect_raw(server.addr).await;
    peer.write(b"02").await;
    peer.expect_end_with(b"01f00000001").await;

    // Not a version at all is an invalid message.
    let mut peer = WirePeer::connect_raw(server.addr).await;
    peer.write(b"GET / HTTP/1.1\r\n\r\n").await;
    peer.expect_end_with(b"01f00000002").await;
}

#[tokio::test]
async fn slow_notification_handler_does_not_stall_the_read_loop() {
    let started = Arc::new(Notify::new());
    let done = Arc::new(AtomicBool::new(false));
    let mut handlers = common::handlers();
    {
        let started = started.clone();
        let done = done.clone();
        handlers.handle_buffer_notification("slow", move |_sock, _| {
            let started = started.clone();
            let done = done.clone();
            async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_secs(2)).await;
                done.store(true, Ordering::SeqCst);
            }
        });
    }
    let server = start(handlers, Config::default()).await;
    let mut peer = WirePeer::connect(server.addr).await;

    // As a Go peer would: the slow notification and a request right behind it, in one write.
    peer.write(b"n004slow00000000r0001004echo00000004fast").await;
    within("slow handler starts", started.notified()).await;
    assert_eq!(
        peer.frame().await,
        Frame::SingleResult { id: Id(*b"0001"), payload: "fast".into() }
    );
    assert!(!done.load(Ordering::SeqCst), "the request was answered behind the slow handler");
}

#[tokio::test]
async fn empty_successful_result_decodes_as_unit_or_none() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;
    // What Go's JSON client chokes on: an `R` with size 0.
    let mut peer = WirePeer::connect(server.addr).await;
    peer.send(&common::request(b"0001", "empty", b"")).await;
    assert_eq!(peer.frame().await, Frame::SingleResult { id: Id(*b"0001"), payload: Bytes::new() });

    client.request::<_, ()>("empty", &()).await.unwrap();
    let nothing: Option<String> = client.request("empty", &()).await.unwrap();
    assert_eq!(nothing, None);
}

#[tokio::test]
async fn stream_results_are_cleaned_up_after_they_complete() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    // Streams that end every way a stream can end: normally, with an error, and a single
    // request whose result was streamed.
    for i in 0..20 {
        let (mut tx, rx) = client.stream_request("stream-echo", format!("{i}")).await.unwrap();
        tx.end().await.unwrap();
        assert_eq!(rx.collect().await.unwrap(), Bytes::from(format!("{i}")));
    }
    let (mut tx, rx) = client.stream_request("stream-fail", "x").await.unwrap();
    tx.end().await.unwrap();
    assert!(rx.collect().await.is_err());
    assert_eq!(&client.buffer_request("stream-echo", "r").await.unwrap()[..], b"r");

    // Nothing is left pending on either side: both socks end at once, without waiting for
    // a timeout.
    let server_side = server.only_connection().await;
    tokio::time::timeout(Duration::from_secs(1), server_side.end())
        .await
        .expect("the server's sock had leftover stream entries");
    tokio::time::timeout(Duration::from_secs(1), client.end())
        .await
        .expect("the client's sock had leftover stream entries");
}

#[tokio::test]
async fn non_bmp_text_and_nul_bytes_keep_the_stream_in_sync() {
    let mut handlers = common::handlers();
    handlers.fallback_buffer(|_sock, op: String, payload: Bytes| async move {
        let mut out = op.into_bytes();
        out.push(b'|');
        out.extend_from_slice(&payload);
        Ok::<_, String>(Bytes::from(out))
    });
    let server = start(handlers, Config::default()).await;
    let client = connect(server.addr).await;

    // Sizes count UTF-8 bytes, and U+0000 is just a byte.
    let op = "op🙂\0é";
    let text = "emoji 🙂🎉 nul \0 after";
    let out = client.buffer_request(op, text).await.unwrap();
    assert_eq!(out, Bytes::from(format!("{op}|{text}")));
    let echoed: String = client.request("echo-json", text).await.unwrap();
    assert_eq!(echoed, text);

    // On the wire: a 4-byte emoji name declared as 004, followed at once by another request.
    let mut peer = WirePeer::connect(server.addr).await;
    let mut wire = b"r0001004".to_vec();
    wire.extend_from_slice("🙂".as_bytes());
    wire.extend_from_slice(b"00000001\0r0002004echo00000001z");
    peer.write(&wire).await;
    let mut want = "🙂|".as_bytes().to_vec();
    want.push(0);
    assert_eq!(peer.frame().await, Frame::SingleResult { id: Id(*b"0001"), payload: want.into() });
    assert_eq!(peer.frame().await, Frame::SingleResult { id: Id(*b"0002"), payload: "z".into() });
}
