//! Single requests over real TCP, in both directions: typed JSON, buffer and fallback
//! handlers, the ErrorResults for unknown ops, bad parameters, handler errors and panics, and
//! many concurrent requests answered out of order.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{connect, connect_with, start, within, WirePeer};
use gotalk::protocol::{Frame, Id};
use gotalk::{CloseReason, Config, Error, Handlers};
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct GreetIn<'a> {
    name: &'a str,
}

#[derive(Deserialize, Debug, PartialEq)]
struct GreetOut {
    greeting: String,
}

#[tokio::test]
async fn typed_json_handler() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    let out: GreetOut = client.request("greet", &GreetIn { name: "Ada" }).await.unwrap();
    assert_eq!(out, GreetOut { greeting: "Hello Ada".into() });

    let value = serde_json::json!({"a": [1, 2.5, null, "ü🙂"], "b": {"c": true}});
    let back: serde_json::Value = client.request("echo-json", &value).await.unwrap();
    assert_eq!(back, value);
}

#[tokio::test]
async fn buffer_handler_echoes_bytes_exactly() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    // Not UTF-8, not JSON, with NULs: raw bytes must pass untouched.
    let payload: Vec<u8> = (0..=255u8).chain([0, 0, 0xff]).collect();
    let echoed = client.buffer_request("echo", payload.clone()).await.unwrap();
    assert_eq!(&echoed[..], &payload[..]);

    // Large enough that the writer passes it through without copying (>= 8 KiB).
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let echoed = client.buffer_request("echo", big.clone()).await.unwrap();
    assert_eq!(&echoed[..], &big[..]);

    let empty = client.buffer_request("echo", Bytes::new()).await.unwrap();
    assert!(empty.is_empty());
}

#[tokio::test]
async fn fallback_handler_gets_unknown_ops_with_their_name() {
    let mut handlers = common::handlers();
    handlers.fallback_buffer(|_sock, op: String, payload: Bytes| async move {
        let mut out = format!("fallback:{op}:").into_bytes();
        out.extend_from_slice(&payload);
        Ok::<_, String>(Bytes::from(out))
    });
    let server = start(handlers, Config::default()).await;
    let client = connect(server.addr).await;

    let out = client.buffer_request("whatever/op", "x").await.unwrap();
    assert_eq!(&out[..], b"fallback:whatever/op:x");
    // A registered op still goes to its own handler.
    assert_eq!(&client.buffer_request("echo", "y").await.unwrap()[..], b"y");
}

#[tokio::test]
async fn unknown_op_gets_go_compatible_error_text() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    match client.buffer_request("nope", "").await {
        Err(Error::Remote(text)) => assert_eq!(text, r#"unknown operation "nope""#),
        other => panic!("expected an ErrorResult, got {other:?}"),
    }

    // On the wire it is an `E` with the same id and plain text, not JSON.
    let mut peer = WirePeer::connect(server.addr).await;
    peer.send(&common::request(b"\0\0\0\x07", "nope", b"{}")).await;
    assert_eq!(
        peer.frame().await,
        Frame::ErrorResult { id: Id([0, 0, 0, 7]), payload: r#"unknown operation "nope""#.into() }
    );
}

#[tokio::test]
async fn bad_json_parameters_get_an_error_result() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    for bad in [&b"{not json"[..], b"{\"name\": 3}", b"[]"] {
        match client.buffer_request("greet", bad.to_vec()).await {
            Err(Error::Remote(text)) => {
                assert!(text.starts_with("invalid parameters"), "got {text:?} for {bad:?}")
            }
            other => panic!("expected an ErrorResult for {bad:?}, got {other:?}"),
        }
    }
    // And the connection is fine afterwards.
    let out: GreetOut = client.request("greet", &GreetIn { name: "B" }).await.unwrap();
    assert_eq!(out.greeting, "Hello B");
}

#[tokio::test]
async fn handler_error_text_passes_through_verbatim() {
    let mut handlers = Handlers::new();
    handlers.handle("odd-error", |_sock, _: ()| async move {
        Err::<(), _>(gotalk::HandlerError::text("line one\nline \"two\" ü🙂 {json?}"))
    });
    handlers.handle("fail", |_sock, _: ()| async move {
        Err::<(), _>(gotalk::HandlerError::text("intentional failure"))
    });
    let server = start(handlers, Config::default()).await;
    let client = connect(server.addr).await;

    match client.request::<_, ()>("fail", &()).await {
        Err(Error::Remote(text)) => assert_eq!(text, "intentional failure"),
        other => panic!("expected an ErrorResult, got {other:?}"),
    }
    match client.request::<_, ()>("odd-error", &()).await {
        Err(Error::Remote(text)) => assert_eq!(text, "line one\nline \"two\" ü🙂 {json?}"),
        other => panic!("expected an ErrorResult, got {other:?}"),
    }

    // Plain text on the wire, not a JSON string.
    let mut peer = WirePeer::connect(server.addr).await;
    peer.send(&common::request(b"0001", "fail", b"")).await;
    assert_eq!(
        peer.frame().await,
        Frame::ErrorResult { id: Id(*b"0001"), payload: "intentional failure".into() }
    );
}

#[tokio::test]
async fn panicking_handler_gets_an_error_result_and_the_connection_survives() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    match client.request::<_, String>("panic", "intentional panic").await {
        Err(Error::Remote(text)) => {
            assert!(text.starts_with("[internal] internal error (ref "), "{text}");
            assert!(!text.contains("intentional"), "the panic's message stays in the log: {text}");
        }
        other => panic!("expected an ErrorResult, got {other:?}"),
    }
    // Same connection, still serving, several times over.
    for i in 0..3 {
        let n: u64 = client.request("sleep", &i).await.unwrap();
        assert_eq!(n, i);
    }
    // The non-panicking path of the same handler works too.
    let s: String = client.request("panic", "").await.unwrap();
    assert_eq!(s, "");
    assert!(!client.is_closed());
    assert_eq!(server.connections.len(), 1);
}

#[tokio::test]
async fn empty_result_decodes_as_unit_and_none() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    client.request::<_, ()>("empty", &()).await.unwrap();
    let none: Option<u32> = client.request("empty", &()).await.unwrap();
    assert_eq!(none, None);
    // A type that cannot be null is a decode error, not a panic or a hang.
    assert!(matches!(client.request::<_, u32>("empty", &()).await, Err(Error::Json(_))));
}

#[tokio::test]
async fn server_handler_calls_the_clients_handler_on_the_same_connection() {
    let server = start(common::handlers(), Config::default()).await;

    let mut client_handlers = Handlers::new();
    client_handlers.handle_buffer("client-echo", |_sock, payload: Bytes| async move {
        let mut out = b"client:".to_vec();
        out.extend_from_slice(&payload);
        Ok::<_, String>(Bytes::from(out))
    });
    let client = connect_with(server.addr, client_handlers, Config::default()).await;

    let out = client.buffer_request("reverse-echo", "ping").await.unwrap();
    assert_eq!(&out[..], b"client:ping");

    // Many at once: every nested call finds its way back.
    let calls = (0..10).map(|i| {
        let client = client.clone();
        async move { client.buffer_request("reverse-echo", format!("n{i}")).await }
    });
    let results = futures_util::future::join_all(calls).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), Bytes::from(format!("client:n{i}")));
    }
}

#[tokio::test]
async fn server_can_request_the_client_directly() {
    let server = start(common::handlers(), Config::default()).await;
    let mut client_handlers = Handlers::new();
    client_handlers
        .handle("add", |_sock, (a, b): (i64, i64)| async move { Ok::<_, String>(a + b) });
    let _client = connect_with(server.addr, client_handlers, Config::default()).await;

    let server_side = server.only_connection().await;
    let sum: i64 = server_side.request("add", &(40, 2)).await.unwrap();
    assert_eq!(sum, 42);
    match server_side.request::<_, ()>("nope", &()).await {
        Err(Error::Remote(text)) => assert_eq!(text, r#"unknown operation "nope""#),
        other => panic!("expected an ErrorResult, got {other:?}"),
    }
}

#[tokio::test]
async fn concurrent_requests_are_answered_out_of_order() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    // Sent in order 0..20 with decreasing delays, so the later ones finish first.
    let finished = Arc::new(Mutex::new(Vec::new()));
    let calls = (0..20u64).map(|i| {
        let client = client.clone();
        let finished = finished.clone();
        async move {
            let ms = (20 - i) * 10;
            let got: u64 = client.request("sleep", &ms).await.unwrap();
            assert_eq!(got, ms, "request {i} got another request's answer");
            finished.lock().unwrap().push(i);
        }
    });
    within("20 concurrent requests", futures_util::future::join_all(calls)).await;

    let order = finished.lock().unwrap().clone();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..20).collect::<Vec<_>>(), "every request answered once");
    assert_ne!(order, sorted, "completion order should differ from send order");
    // The shortest sleep was sent last and must not have been answered last.
    assert_ne!(order.last(), Some(&19));
}

#[tokio::test]
async fn wire_peer_sees_results_in_completion_order_with_its_own_ids() {
    let server = start(common::handlers(), Config::default()).await;
    let mut peer = WirePeer::connect(server.addr).await;

    // Non-printable ids, as the Go client sends, and a slow request first.
    peer.send(&common::request(&[0, 0, 0, 0], "sleep", b"200")).await;
    peer.send(&common::request(&[1, 0, 0, 0], "sleep", b"1")).await;
    peer.send(&common::request(&[0xff, 0xfe, 0, 0x80], "echo", b"hi")).await;

    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(peer.frame().await);
    }
    assert_eq!(
        got.last().unwrap(),
        &Frame::SingleResult { id: Id([0, 0, 0, 0]), payload: "200".into() },
        "the slow request is answered last"
    );
    assert!(got.contains(&Frame::SingleResult { id: Id([1, 0, 0, 0]), payload: "1".into() }));
    assert!(
        got.contains(&Frame::SingleResult { id: Id([0xff, 0xfe, 0, 0x80]), payload: "hi".into() })
    );
}

#[tokio::test]
async fn local_payload_limit_is_checked_before_sending() {
    let server = start(common::handlers(), Config::default()).await;
    let config = Config::default().max_payload(16);
    let client = connect_with(server.addr, Handlers::new(), config).await;

    match client.buffer_request("echo", vec![0u8; 17]).await {
        Err(Error::PayloadTooLarge { size: 17, max: 16 }) => {}
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert_eq!(&client.buffer_request("echo", vec![1u8; 16]).await.unwrap()[..], &[1u8; 16]);
}

#[tokio::test]
async fn handshake_and_first_request_in_one_write() {
    let server = start(common::handlers(), Config::default()).await;
    let mut peer = WirePeer::connect_raw(server.addr).await;
    peer.write(b"01r0001004echo00000002hi").await;
    assert_eq!(peer.read_bytes(2).await, b"01");
    assert_eq!(peer.frame().await, Frame::SingleResult { id: Id(*b"0001"), payload: "hi".into() });
}

#[tokio::test]
async fn abandoned_request_frees_its_entry_and_its_late_result_is_dropped() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;
    // A deadline shorter than the handler: the caller gives up.
    let late =
        tokio::time::timeout(Duration::from_millis(50), client.request::<_, u64>("sleep", &300))
            .await;
    assert!(late.is_err(), "the deadline fired first");
    // The result arrives later for an id nobody waits for; the connection is unaffected.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(client.request::<_, u64>("sleep", &1).await.unwrap(), 1);
    // No call is left in the table: a graceful end has nothing to wait for.
    within("end with nothing pending", client.end()).await;
    assert_eq!(client.close_reason(), Some(CloseReason::Ended));
}
