//! A real [`Sock`] on one end of an in-memory pipe, the fuzzer's bytes as its peer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use gotalk::sources::{Source, SourceService, Sources, SourcesOptions};
use gotalk::{Config, Handlers, Sock};
use gotalk::{ConnInfo, TransportKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::runtime::run;

/// How long a sock may take to close after its peer hung up: long enough for every handler
/// below and for a queue of writes to drain, far below the harness's budget.
pub const CLOSE_WITHIN: Duration = Duration::from_secs(120);

/// Limits small enough that fuzz inputs of a few KiB reach them, and timeouts short enough
/// that an input which idles the sock reaches them too.
pub fn config() -> Config {
    Config::default()
        .max_payload(4096)
        .max_name_len(64)
        .request_limit(4)
        .stream_limit(2)
        .held_requests(4)
        .send_queue_bytes(16 * 1024)
        .notification_queue_bytes(4096)
        .stream_buffer_bytes(8192)
        .handshake_timeout(Duration::from_secs(5))
        .read_timeout(Some(Duration::from_secs(30)))
        .write_timeout(Duration::from_secs(10))
}

/// Handlers like the demo server's: plain and JSON requests, a stream, one that calls the peer
/// back, notifications, a sources service and the relay. No handler panics on purpose:
/// libFuzzer aborts on any panic, even one the sock catches (tests/panics.rs covers those).
pub fn server_handlers() -> Handlers {
    let mut handlers = Handlers::new();
    handlers
        .handle_buffer("echo", |_sock, payload: Bytes| async move { Ok::<_, String>(payload) })
        .handle("greet", |_sock, name: String| async move { Ok::<_, String>(format!("hi {name}")) })
        .handle("sleep", |_sock, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms.min(2000))).await;
            Ok::<_, String>(ms)
        })
        .handle_buffer("ask", |sock, payload: Bytes| async move {
            // Calls the peer back: the fuzzer's bytes are the answer, or never come.
            sock.buffer_request("question", payload).await.map_err(|e| e.to_string())
        })
        .handle_stream("stream-echo", |_sock, mut input, mut output| async move {
            while let Some(part) = input.next().await? {
                output.send(part).await?;
            }
            Ok::<_, gotalk::Error>(())
        })
        .handle_buffer_notification("note", |_sock, _payload| async move {});
    SourceService::new(|_sock, body: Bytes| async move {
        let sources = (0..body.len().min(3)).map(|n| {
            let frames = stream::iter(0..n + 1).then(move |i| async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                // Repetitive enough to be compressed, so both part kinds go out.
                Ok::<_, String>(Bytes::from(format!("{i:03}").repeat(40)))
            });
            Source::new(format!("source {n}"), frames)
        });
        Ok::<_, String>(stream::iter(sources))
    })
    .compress(true)
    .register(&mut handlers, "search");
    handlers.relay(gotalk::relay::Relay::new());
    handlers
}

/// A sock serving [`server_handlers`], the fuzzer's bytes as the client.
///
/// Checks that the sock never panics, that a handshake either fails or yields a sock, and
/// that the sock closes within [`CLOSE_WITHIN`] of its peer hanging up.
pub fn sock_server(data: &[u8]) {
    let data = data.to_vec();
    run("sock_server", async move {
        let (ours, theirs) = tokio::io::duplex(16 * 1024);
        let peer = tokio::spawn(play_peer(theirs, data));
        let (r, w) = gotalk::transport::io(ours);
        let info = ConnInfo::new(TransportKind::Memory, None, None);
        let started = Sock::start(r, w, Arc::new(server_handlers()), Arc::new(config()), info);
        if let Ok(sock) = started.await {
            closes_after_peer(&sock, peer).await;
        }
    });
}

/// A sock with calls of every kind outstanding, the fuzzer's bytes as the server answering.
///
/// Checks that every call resolves (with a result or an error) and the sock closes within
/// [`CLOSE_WITHIN`] of the peer hanging up, without a panic.
pub fn sock_client(data: &[u8]) {
    let data = data.to_vec();
    run("sock_client", async move {
        let (ours, theirs) = tokio::io::duplex(16 * 1024);
        let peer = tokio::spawn(play_peer(theirs, data));
        let (r, w) = gotalk::transport::io(ours);
        let info = ConnInfo::new(TransportKind::Memory, None, None);
        let mut handlers = Handlers::new();
        handlers
            .handle_buffer("question", |_sock, p: Bytes| async move { Ok::<_, String>(p) })
            .handle_buffer_notification("note", |_sock, _payload| async move {});
        let Ok(sock) = Sock::start(r, w, Arc::new(handlers), Arc::new(config()), info).await else {
            return;
        };
        // Request ids are given out in this order (0, 1, 2, ...), so a corpus input can
        // answer each call by its id.
        let single = sock.buffer_request("echo", Bytes::from_static(b"one"));
        let json = sock.request::<_, String>("greet", &"two");
        let stream = async {
            let (mut input, mut output) = sock.stream_request("stream-echo", "three").await?;
            input.write("four").await?;
            input.end().await?;
            while output.next().await?.is_some() {}
            Ok::<_, gotalk::Error>(())
        };
        let sources = async {
            let options = SourcesOptions::default().lz4(true).frame_window(2).max_frame(1024);
            let mut sources =
                Sources::open(&sock, "search", Bytes::from_static(b"q"), options).await?;
            while let Ok(Some(mut source)) = sources.next().await {
                while let Ok(Some(_frame)) = source.next().await {}
            }
            Ok::<_, gotalk::Error>(())
        };
        let notify = sock.buffer_notify("note", Bytes::from_static(b"five"));
        let calls = async {
            let _ = tokio::join!(single, json, stream, sources, notify);
        };
        if tokio::time::timeout(CLOSE_WITHIN, calls).await.is_err() {
            panic!("a call did not resolve within {CLOSE_WITHIN:?} of the peer hanging up");
        }
        closes_after_peer(&sock, peer).await;
    });
}

/// Writes `data` as the peer, then hangs up its writing side, while reading (and dropping)
/// everything the sock sends so that the sock's writes never block on a full pipe.
async fn play_peer(pipe: DuplexStream, data: Vec<u8>) {
    let (mut rd, mut wr) = tokio::io::split(pipe);
    let drain = async {
        let mut sink = vec![0u8; 8192];
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let write = async {
        let _ = wr.write_all(&data).await;
        let _ = wr.shutdown().await;
    };
    tokio::join!(drain, write);
}

/// Waits for the peer to finish, then for the sock to close.
async fn closes_after_peer(sock: &Sock, peer: tokio::task::JoinHandle<()>) {
    let closed = async {
        let _ = peer.await;
    };
    let reason = tokio::time::timeout(CLOSE_WITHIN * 2, async {
        let (_, reason) = tokio::join!(closed, sock.closed());
        reason
    })
    .await;
    if reason.is_err() {
        panic!("the sock did not close within {:?} of its peer hanging up", CLOSE_WITHIN * 2);
    }
}
