//! Notifications over real TCP in both directions: typed, raw and fallback handlers, order
//! kept per peer, and a slow notification handler that does not stall requests.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{connect, connect_with, start, within};
use gotalk::{Config, Handlers, Sock};
use tokio::sync::{mpsc, Notify};

#[tokio::test]
async fn client_notifies_server_typed_and_raw() {
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Bytes)>();
    let mut handlers = Handlers::new();
    let typed = tx.clone();
    handlers.handle_notification("typed", move |_sock, value: serde_json::Value| {
        let typed = typed.clone();
        async move {
            let _ = typed.send(("typed".into(), Bytes::from(value.to_string())));
        }
    });
    let raw = tx.clone();
    handlers.handle_buffer_notification("raw", move |_sock, payload: Bytes| {
        let raw = raw.clone();
        async move {
            let _ = raw.send(("raw".into(), payload));
        }
    });
    let server = start(handlers, Config::default()).await;
    let client = connect(server.addr).await;

    client.notify("typed", &serde_json::json!({"k": [1, 2]})).await.unwrap();
    client.buffer_notify("raw", vec![0u8, 255]).await.unwrap();
    // A notification nobody handles is dropped silently; the connection goes on.
    client.notify("unhandled", &1).await.unwrap();
    client.notify("typed", &"after").await.unwrap();

    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(within("notification", rx.recv()).await.expect("handler alive"));
    }
    assert_eq!(
        got,
        [
            ("typed".into(), Bytes::from(r#"{"k":[1,2]}"#)),
            ("raw".into(), Bytes::from(vec![0u8, 255])),
            ("typed".into(), Bytes::from(r#""after""#)),
        ]
    );
    assert!(!client.is_closed());
}

#[tokio::test]
async fn server_notifies_client_from_a_handler_and_directly() {
    let server = start(common::handlers(), Config::default()).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Bytes)>();
    let mut client_handlers = Handlers::new();
    client_handlers.fallback_notification(move |_sock, name: String, payload: Bytes| {
        let tx = tx.clone();
        async move {
            let _ = tx.send((name, payload));
        }
    });
    let client = connect_with(server.addr, client_handlers, Config::default()).await;

    // `notify-me` sends `notified` before it answers, so it is already on its way.
    client.buffer_request("notify-me", "payload-1").await.unwrap();
    let got = within("notified", rx.recv()).await.unwrap();
    assert_eq!(got, ("notified".into(), Bytes::from("payload-1")));

    // A notification handler on the server answering with a notification.
    client.buffer_notify("echo-note", "ping").await.unwrap();
    let got = within("echo-note-reply", rx.recv()).await.unwrap();
    assert_eq!(got, ("echo-note-reply".into(), Bytes::from("ping")));

    // The server's sock can notify on its own.
    let server_side = server.only_connection().await;
    server_side.notify("direct", &[1, 2, 3]).await.unwrap();
    let got = within("direct", rx.recv()).await.unwrap();
    assert_eq!(got, ("direct".into(), Bytes::from("[1,2,3]")));
}

#[tokio::test]
async fn notifications_are_handled_in_the_order_sent() {
    let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
    let mut handlers = Handlers::new();
    handlers.handle_notification("seq", move |_sock, n: u32| {
        let tx = tx.clone();
        async move {
            // Uneven handler times: without ordering, later ones would overtake these.
            if n.is_multiple_of(7) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let _ = tx.send(n);
        }
    });
    let server = start(handlers, Config::default()).await;
    let client = connect(server.addr).await;

    for n in 0..200u32 {
        client.notify("seq", &n).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 200 {
        got.push(within("200 notifications", rx.recv()).await.unwrap());
    }
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}

#[tokio::test]
async fn slow_notification_handler_does_not_stall_requests() {
    let started = Arc::new(Notify::new());
    let slow_done = Arc::new(AtomicBool::new(false));
    let mut handlers = common::handlers();
    {
        let started = started.clone();
        let slow_done = slow_done.clone();
        handlers.handle_notification("slow", move |_sock, _: ()| {
            let started = started.clone();
            let slow_done = slow_done.clone();
            async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_secs(2)).await;
                slow_done.store(true, Ordering::SeqCst);
            }
        });
    }
    let server = start(handlers, Config::default()).await;
    let client = connect(server.addr).await;

    client.notify("slow", &()).await.unwrap();
    within("slow handler starts", started.notified()).await;

    // While the slow handler sleeps, requests of every kind go through.
    for i in 0..20u64 {
        let n: u64 = client.request("sleep", &i).await.unwrap();
        assert_eq!(n, i);
    }
    let many = (0..20).map(|i| client.buffer_request("echo", format!("{i}")));
    for (i, r) in futures_util::future::join_all(many).await.into_iter().enumerate() {
        assert_eq!(r.unwrap(), Bytes::from(format!("{i}")));
    }
    let (mut tx, rx) = client.stream_request("stream-echo", "s").await.unwrap();
    tx.end().await.unwrap();
    assert_eq!(&rx.collect().await.unwrap()[..], b"s");

    assert!(
        !slow_done.load(Ordering::SeqCst),
        "the requests should complete while the slow notification handler is still running"
    );
}

#[tokio::test]
async fn slow_notification_handler_on_the_client_does_not_stall_its_requests() {
    let server = start(common::handlers(), Config::default()).await;
    let slow_done = Arc::new(AtomicBool::new(false));
    let started = Arc::new(Notify::new());
    let mut client_handlers = Handlers::new();
    {
        let slow_done = slow_done.clone();
        let started = started.clone();
        client_handlers.handle_buffer_notification("notified", move |_sock: Sock, _| {
            let slow_done = slow_done.clone();
            let started = started.clone();
            async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_secs(2)).await;
                slow_done.store(true, Ordering::SeqCst);
            }
        });
    }
    let client = connect_with(server.addr, client_handlers, Config::default()).await;

    client.buffer_request("notify-me", "x").await.unwrap();
    within("client's slow handler starts", started.notified()).await;
    for i in 0..10u64 {
        let n: u64 = client.request("sleep", &i).await.unwrap();
        assert_eq!(n, i);
    }
    assert!(!slow_done.load(Ordering::SeqCst));
}

#[tokio::test]
async fn on_connect_notification_right_after_the_handshake_arrives() {
    // The server's first notification may arrive in the same segment as its `01`.
    let mut handlers = common::handlers();
    handlers.on_connect(|sock: Sock| async move {
        let _ =
            sock.notify("hello", &serde_json::json!({"msg": "welcome", "transport": "tcp"})).await;
    });
    let server = start(handlers, Config::default()).await;

    let (tx, mut rx) = mpsc::unbounded_channel::<serde_json::Value>();
    let mut client_handlers = Handlers::new();
    client_handlers.handle_notification("hello", move |_sock, value: serde_json::Value| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(value);
        }
    });
    let _client = connect_with(server.addr, client_handlers, Config::default()).await;
    let hello = within("hello", rx.recv()).await.unwrap();
    assert_eq!(hello, serde_json::json!({"msg": "welcome", "transport": "tcp"}));
}

#[tokio::test]
async fn panicking_notification_handler_does_not_stop_later_notifications() {
    let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
    let mut handlers = common::handlers();
    handlers.handle_notification("maybe-panic", move |_sock, n: u32| {
        let tx = tx.clone();
        async move {
            if n == 1 {
                panic!("intentional notification panic");
            }
            let _ = tx.send(n);
        }
    });
    let server = start(handlers, Config::default()).await;
    let client = connect(server.addr).await;
    for n in 0..4u32 {
        client.notify("maybe-panic", &n).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(within("notifications", rx.recv()).await.unwrap());
    }
    assert_eq!(got, [0, 2, 3]);
    assert_eq!(&client.buffer_request("echo", "alive").await.unwrap()[..], b"alive");
}

#[tokio::test]
async fn notifications_from_a_peer_that_hangs_up_at_once_are_still_handled() {
    // A handler that takes its time, so the peer's close arrives while notes still wait.
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let mut handlers = Handlers::new();
    handlers.handle_buffer_notification("note", move |_sock, payload: Bytes| {
        let tx = tx.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = tx.send(payload);
        }
    });
    let server = start(handlers, Config::default()).await;
    let mut peer = common::WirePeer::connect(server.addr).await;
    peer.write(b"n004note00000001an004note00000001bn004note00000001c").await;
    drop(peer);
    for expected in ["a", "b", "c"] {
        assert_eq!(within("note", rx.recv()).await.unwrap(), expected);
    }
}
