//! Streaming requests and results over real TCP, in both directions, and the mixes of a
//! single request to a streaming handler and a streaming request to a single handler.

mod common;

use bytes::Bytes;
use common::{connect, connect_with, start, within, WirePeer};
use gotalk::protocol::{Frame, Id};
use gotalk::{Config, Error, Handlers, Sock, StreamInput, StreamOutput};

#[tokio::test]
async fn client_streams_to_a_server_stream_handler_part_by_part() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    let (mut tx, mut rx) = client.stream_request("stream-echo", "one").await.unwrap();
    // Each part comes back before the request stream ends: it really streams.
    assert_eq!(within("part 1", rx.next()).await.unwrap(), Some(Bytes::from("one")));
    tx.write("two").await.unwrap();
    assert_eq!(within("part 2", rx.next()).await.unwrap(), Some(Bytes::from("two")));
    tx.write(vec![0u8, 1, 2, 255]).await.unwrap();
    assert_eq!(within("part 3", rx.next()).await.unwrap(), Some(Bytes::from(vec![0u8, 1, 2, 255])));
    tx.end().await.unwrap();
    assert_eq!(within("end", rx.next()).await.unwrap(), None);
    assert!(matches!(tx.write("late").await, Err(Error::StreamEnded)));
    assert!(matches!(tx.end().await, Err(Error::StreamEnded)));
}

#[tokio::test]
async fn many_parts_and_many_streams_at_once() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    let streams = (0..8).map(|s| {
        let client = client.clone();
        async move {
            let (mut tx, rx) = client.stream_request("stream-echo", format!("{s}:")).await?;
            let mut want = format!("{s}:");
            for i in 0..50 {
                let part = format!("{s}.{i};");
                want.push_str(&part);
                tx.write(part).await?;
            }
            tx.end().await?;
            let got = rx.collect().await?;
            assert_eq!(got, Bytes::from(want));
            Ok::<_, Error>(())
        }
    });
    for r in within("8 streams", futures_util::future::join_all(streams)).await {
        r.unwrap();
    }
}

#[tokio::test]
async fn stream_handler_error_ends_the_result_with_an_error() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    let (mut tx, mut rx) = client.stream_request("stream-fail", "first").await.unwrap();
    assert_eq!(rx.next().await.unwrap(), Some(Bytes::from("first")));
    match within("stream error", rx.next()).await {
        Err(Error::Remote(text)) => assert_eq!(text, "intentional stream failure"),
        other => panic!("expected an ErrorResult, got {other:?}"),
    }
    // Writing more parts after the server gave up is harmless.
    tx.write("ignored").await.unwrap();
    tx.end().await.unwrap();
    let echoed = client.buffer_request("echo", "still fine").await.unwrap();
    assert_eq!(&echoed[..], b"still fine");
}

#[tokio::test]
async fn server_handler_streams_to_a_client_stream_handler() {
    let mut handlers = common::handlers();
    handlers.handle_buffer("ask-client-stream", |sock: Sock, payload: Bytes| async move {
        let (mut tx, rx) = sock.stream_request("client-upper", payload).await?;
        tx.write("b").await?;
        tx.write("c").await?;
        tx.end().await?;
        rx.collect().await
    });
    let server = start(handlers, Config::default()).await;

    let mut client_handlers = Handlers::new();
    client_handlers.handle_stream(
        "client-upper",
        |_sock, mut input: StreamInput, mut output: StreamOutput| async move {
            while let Some(part) = input.next().await? {
                output.send(part.to_ascii_uppercase()).await?;
            }
            Ok::<_, Error>(())
        },
    );
    let client = connect_with(server.addr, client_handlers, Config::default()).await;

    let out = within("nested stream", client.buffer_request("ask-client-stream", "a")).await;
    assert_eq!(&out.unwrap()[..], b"ABC");

    // And the server's sock can stream to the client directly, reading part by part.
    let server_side = server.only_connection().await;
    let (mut tx, mut rx) = server_side.stream_request("client-upper", "x").await.unwrap();
    assert_eq!(rx.next().await.unwrap(), Some(Bytes::from("X")));
    tx.write("yz").await.unwrap();
    assert_eq!(rx.next().await.unwrap(), Some(Bytes::from("YZ")));
    tx.end().await.unwrap();
    assert_eq!(rx.next().await.unwrap(), None);
}

#[tokio::test]
async fn single_request_to_a_stream_only_handler() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    // The Rust client collects the streamed result into one buffer.
    let out = client.buffer_request("stream-echo", "solo").await.unwrap();
    assert_eq!(&out[..], b"solo");

    // On the wire: an `r` is answered with `S` parts and an empty `S` that ends them.
    let mut peer = WirePeer::connect(server.addr).await;
    peer.send(&common::request(b"0001", "stream-echo", b"abc")).await;
    assert_eq!(peer.frame().await, Frame::StreamResult { id: Id(*b"0001"), payload: "abc".into() });
    assert_eq!(peer.frame().await, Frame::StreamResult { id: Id(*b"0001"), payload: Bytes::new() });
}

#[tokio::test]
async fn stream_request_to_a_buffer_only_handler_is_gathered() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    let (mut tx, mut rx) = client.stream_request("echo", "ab").await.unwrap();
    tx.write("cd").await.unwrap();
    tx.write("ef").await.unwrap();
    tx.end().await.unwrap();
    assert_eq!(within("gathered", rx.next()).await.unwrap(), Some(Bytes::from("abcdef")));
    assert_eq!(rx.next().await.unwrap(), None);

    // On the wire: `s` + `p` parts + empty `p`, answered by a single `R`.
    let mut peer = WirePeer::connect(server.addr).await;
    peer.send(&common::stream_request(b"!000", "echo", b"1")).await;
    peer.send(&Frame::StreamRequestPart { id: Id(*b"!000"), payload: "2".into() }).await;
    peer.send(&Frame::StreamRequestPart { id: Id(*b"!000"), payload: Bytes::new() }).await;
    assert_eq!(peer.frame().await, Frame::SingleResult { id: Id(*b"!000"), payload: "12".into() });
}

#[tokio::test]
async fn dropping_an_unfinished_stream_frees_it_on_both_sides() {
    let config = Config::default().stream_limit(1);
    let server = start(common::handlers(), config).await;
    let client = connect(server.addr).await;

    // Open a stream, read one part, then walk away from both halves.
    let (tx, mut rx) = client.stream_request("stream-echo", "x").await.unwrap();
    assert_eq!(rx.next().await.unwrap(), Some(Bytes::from("x")));
    drop(tx);
    drop(rx);

    // With a stream limit of 1 the next stream only fits once the server saw the end of the
    // abandoned one; the client retries a RetryResult for single requests only, so poll.
    let reopened = within("the stream slot frees", async {
        loop {
            let (mut tx, rx) = client.stream_request("stream-echo", "y").await.unwrap();
            tx.end().await.unwrap();
            match rx.collect().await {
                Ok(all) => return all,
                Err(Error::Retry { .. }) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                Err(e) => panic!("unexpected stream error: {e}"),
            }
        }
    })
    .await;
    assert_eq!(&reopened[..], b"y");
    // Nothing is left pending on the client: a graceful end returns at once.
    within("end after abandoned stream", client.end()).await;
}
