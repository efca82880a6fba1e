//! Sources over real sockets: chanserv's scenario over TCP and WebSocket with and without
//! compression, the service's error, no sources, the frame, window and open-sources limits at
//! their edges, a stalled consumer, cancels, a disconnect (no producer left), a malformed
//! control part, and a decompression bomb refused by the client.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::web::WebServer;
use common::{start, within, WirePeer};
use futures_util::stream::{self, StreamExt};
use gotalk::protocol::sources::{Control, Open, Part};
use gotalk::protocol::{Frame, Id};
use gotalk::sources::{
    lookup_and_post, Source, SourceError, SourceService, Sources, SourcesOptions,
};
use gotalk::{Config, Error, Handlers, Sock};

/// Counts live producers: each frame stream holds a guard, so a producer that was dropped
/// stops counting. `max` is the most alive at once.
#[derive(Clone, Default)]
struct Producers {
    live: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    /// Frames produced so far, by every producer.
    produced: Arc<AtomicUsize>,
}

struct Guard(Producers);

impl Producers {
    fn guard(&self) -> Guard {
        let now = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        Guard(self.clone())
    }

    fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    async fn wait_for(&self, live: usize) {
        within("producers to be dropped", async {
            while self.live() != live {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    /// A source of `frames`, then the end, counted while it lives.
    fn source(&self, header: String, frames: Vec<Bytes>) -> Source {
        let guard = self.guard();
        let produced = self.produced.clone();
        let frames = stream::iter(frames).map(move |frame| {
            let _alive = &guard;
            produced.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(frame)
        });
        Source::new(header, frames)
    }

    /// A source that never ends: a frame whenever it is asked for one.
    fn endless(&self, header: String) -> Source {
        let guard = self.guard();
        let produced = self.produced.clone();
        let frames = stream::repeat_with(move || {
            let _alive = &guard;
            produced.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(Bytes::from_static(b"tick"))
        });
        Source::new(header, frames)
    }
}

impl Producers {
    /// A service whose every request gets `n` endless sources with headers "0", "1", …,
    /// each counted while it lives; sources are made only as the scheduler takes them.
    fn endless_service(&self, n: usize) -> SourceService {
        let p = self.clone();
        SourceService::new(move |_sock, _body| {
            let p = p.clone();
            let sources = stream::iter(0..n).map(move |i| p.endless(i.to_string()));
            async move { Ok::<_, String>(sources) }
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// 180 KiB of text-like bytes, which LZ4 shrinks, and which differ per source.
fn big_frame(source: usize) -> Bytes {
    let line = format!("source {source}: the quick brown fox jumps over the lazy dog\n");
    Bytes::from(line.repeat(180 * 1024 / line.len() + 1)[..180 * 1024].to_owned())
}

fn small_frame(source: usize) -> Bytes {
    Bytes::from(format!("hello src {source:02}"))
}

/// chanserv's own scenario: 10 sources of 2 frames, one of 12 bytes and one of 180 KiB.
fn chanserv_handlers(compress: bool) -> Handlers {
    let mut handlers = Handlers::new();
    SourceService::new(|_sock, body: Bytes| async move {
        assert_eq!(&body[..], b"query");
        Ok::<_, String>(stream::iter((0..10).map(|i| {
            let frames = vec![small_frame(i), big_frame(i)];
            Source::new(
                format!("header {i}"),
                stream::iter(frames.into_iter().map(Ok::<_, String>)),
            )
        })))
    })
    .compress(compress)
    .register(&mut handlers, "chanserv");
    handlers
}

async fn read_all(mut sources: Sources) -> Vec<(Bytes, Vec<Bytes>)> {
    let mut all = Vec::new();
    while let Some(mut source) = within("next source", sources.next()).await.unwrap() {
        let mut frames = Vec::new();
        while let Some(frame) = within("next frame", source.next()).await.unwrap() {
            frames.push(frame);
        }
        all.push((source.header().clone(), frames));
    }
    all
}

fn assert_chanserv(all: &[(Bytes, Vec<Bytes>)]) {
    assert_eq!(all.len(), 10);
    for (i, (header, frames)) in all.iter().enumerate() {
        assert_eq!(header, &Bytes::from(format!("header {i}")));
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].len(), 12);
        assert_eq!(frames[0], small_frame(i));
        assert_eq!(frames[1], big_frame(i), "the 180 KiB frame of source {i}");
    }
}

#[tokio::test]
async fn chanserv_scenario_over_tcp_and_websocket_with_and_without_compression() {
    for compress in [false, true] {
        let server = WebServer::start(chanserv_handlers(compress), Config::default(), |g| g).await;
        let tcp = common::connect(server.tcp).await;
        let ws = server.connect(Handlers::new()).await;
        for sock in [&tcp, &ws] {
            let sources = lookup_and_post(sock, "chanserv", "query").await.unwrap();
            let all = read_all(sources).await;
            assert_chanserv(&all);
        }
        // A client that cannot decompress gets the same, uncompressed.
        let options = SourcesOptions::default().lz4(false);
        let sources = Sources::open(&ws, "chanserv", "query".into(), options).await.unwrap();
        assert_chanserv(&read_all(sources).await);
        server.stop().await;
    }
}

#[tokio::test]
async fn frames_are_compressed_only_for_clients_that_take_lz4() {
    let server = start(chanserv_handlers(true), Config::default()).await;
    for (lz4, tag) in [(true, b'z'), (false, b'f')] {
        let mut peer = WirePeer::connect(server.addr).await;
        let open = Open { lz4, ..Open::default() };
        peer.send(&common::stream_request(b"s001", "chanserv", &open.encode(b"query"))).await;
        // The tag of each source's second frame, the big one; the 12-byte first frames are
        // never worth compressing.
        let (mut big_tags, mut wire_bytes) = (Vec::new(), 0);
        let mut frames_seen = std::collections::HashMap::<u32, usize>::new();
        loop {
            match peer.next_frame().await {
                Some(Frame::StreamResult { payload, .. }) if payload.is_empty() => break,
                Some(Frame::StreamResult { payload, .. }) => {
                    wire_bytes += payload.len();
                    let part = Part::decode(&payload).unwrap();
                    if let Part::Frame { source, .. } | Part::Compressed { source, .. } = part {
                        let seen = frames_seen.entry(source).or_default();
                        *seen += 1;
                        if *seen == 2 {
                            big_tags.push(payload[0]);
                        } else {
                            assert_eq!(payload[0], b'f', "a 12-byte frame is sent as is");
                        }
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(big_tags, vec![tag; 10], "lz4 {lz4}");
        if lz4 {
            assert!(wire_bytes < 10 * 180 * 1024 / 10, "{wire_bytes} bytes on the wire");
        } else {
            assert!(wire_bytes > 10 * 180 * 1024, "{wire_bytes} bytes on the wire");
        }
    }
}

#[tokio::test]
async fn a_service_error_before_the_first_source_is_an_error_result() {
    let mut handlers = Handlers::new();
    SourceService::new(|_sock, _body| async {
        Err::<stream::Empty<Source>, _>("no shards for that index")
    })
    .register(&mut handlers, "search");
    let server = start(handlers, Config::default()).await;
    let sock = common::connect(server.addr).await;
    let mut sources = lookup_and_post(&sock, "search", "q").await.unwrap();
    match within("error", sources.next()).await {
        Err(Error::Remote(message)) => assert_eq!(message, "no shards for that index"),
        other => panic!("expected the service's error, got {other:?}"),
    }
}

#[tokio::test]
async fn zero_sources_end_at_once() {
    let mut handlers = Handlers::new();
    SourceService::new(|_sock, _body| async { Ok::<_, String>(stream::empty::<Source>()) })
        .register(&mut handlers, "none");
    let server = start(handlers, Config::default()).await;
    let sock = common::connect(server.addr).await;
    let mut sources = lookup_and_post(&sock, "none", "").await.unwrap();
    assert!(within("end", sources.next()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_frame_past_the_limit_aborts_only_its_source() {
    let producers = Producers::default();
    let mut handlers = Handlers::new();
    let p = producers.clone();
    SourceService::new(move |_sock, _body| {
        let p = p.clone();
        async move {
            // At the limit, one past it, at it again.
            let sizes = [1000usize, 1001, 1000];
            let sources = sizes.map(|n| p.source(format!("{n}"), vec![Bytes::from(vec![7u8; n])]));
            Ok::<_, String>(stream::iter(sources))
        }
    })
    .max_frame(1000)
    .register(&mut handlers, "sized");
    let server = start(handlers, Config::default()).await;
    let sock = common::connect(server.addr).await;
    let mut sources = lookup_and_post(&sock, "sized", "").await.unwrap();
    let mut outcomes = Vec::new();
    while let Some(mut source) = within("source", sources.next()).await.unwrap() {
        let mut got = Vec::new();
        let end = loop {
            match within("frame", source.next()).await {
                Ok(Some(frame)) => got.push(frame.len()),
                Ok(None) => break "completed".to_owned(),
                Err(SourceError::Aborted(reason)) => break reason,
                Err(e) => panic!("{e}"),
            }
        };
        outcomes.push((got, end));
    }
    assert_eq!(
        outcomes,
        vec![
            (vec![1000], "completed".to_owned()),
            (vec![], "frame of 1001 bytes exceeds the limit of 1000".to_owned()),
            (vec![1000], "completed".to_owned()),
        ]
    );
    producers.wait_for(0).await;
}

#[tokio::test]
async fn the_frame_window_bounds_what_a_source_sends_ahead_of_its_reader() {
    let producers = Producers::default();
    let mut handlers = Handlers::new();
    let p = producers.clone();
    SourceService::new(move |_sock, _body| {
        let p = p.clone();
        async move { Ok::<_, String>(stream::iter([p.endless("endless".into())])) }
    })
    .register(&mut handlers, "endless");
    let server = start(handlers, Config::default()).await;
    let sock = common::connect(server.addr).await;
    let options = SourcesOptions::default().frame_window(4);
    let mut sources = Sources::open(&sock, "endless", Bytes::new(), options).await.unwrap();
    let mut source = within("source", sources.next()).await.unwrap().unwrap();
    // Unread, the source gets exactly its window: the producer is not even asked for more.
    within("the window", async {
        while producers.produced.load(Ordering::SeqCst) < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(producers.produced.load(Ordering::SeqCst), 4);
    // Reading half the window grants it again.
    for _ in 0..2 {
        within("frame", source.next()).await.unwrap().unwrap();
    }
    within("more frames", async {
        while producers.produced.load(Ordering::SeqCst) != 6 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(producers.produced.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn at_most_max_open_sources_are_open_at_once() {
    let producers = Producers::default();
    let mut handlers = Handlers::new();
    let p = producers.clone();
    SourceService::new(move |_sock, _body| {
        let p = p.clone();
        // Made lazily, as the scheduler asks for them, so a live guard is an open source.
        let sources =
            stream::iter(0..6).map(move |i| p.source(format!("{i}"), vec![small_frame(i)]));
        async move { Ok::<_, String>(sources) }
    })
    .max_open(2)
    .register(&mut handlers, "six");
    let server = start(handlers, Config::default()).await;
    let sock = common::connect(server.addr).await;
    let sources = lookup_and_post(&sock, "six", "").await.unwrap();
    assert_eq!(read_all(sources).await.len(), 6);
    assert_eq!(producers.max.load(Ordering::SeqCst), 2, "open at once, at the limit of 2");
}

#[tokio::test]
async fn a_stalled_consumer_is_aborted_while_the_others_finish() {
    let producers = Producers::default();
    let mut handlers = Handlers::new();
    let p = producers.clone();
    SourceService::new(move |_sock, _body| {
        let p = p.clone();
        async move {
            let frames = || (0..20).map(|i| Bytes::from(format!("frame {i}"))).collect::<Vec<_>>();
            let sources = [
                p.endless("stalls".into()),
                p.source("a".into(), frames()),
                p.source("b".into(), frames()),
            ];
            Ok::<_, String>(stream::iter(sources))
        }
    })
    .stall_timeout(Duration::from_millis(300))
    .register(&mut handlers, "stall");
    let server = start(handlers, Config::default()).await;
    let sock = common::connect(server.addr).await;
    let options = SourcesOptions::default().frame_window(4);
    let mut sources = Sources::open(&sock, "stall", Bytes::new(), options).await.unwrap();
    let mut stalled = within("source", sources.next()).await.unwrap().unwrap();
    for _ in 0..2 {
        let mut source = within("source", sources.next()).await.unwrap().unwrap();
        let mut n = 0;
        while within("frame", source.next()).await.unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 20);
    }
    assert!(within("end", sources.next()).await.unwrap().is_none());
    // The stalled source's window is still there to read, then its abort.
    for _ in 0..4 {
        assert_eq!(within("frame", stalled.next()).await.unwrap().unwrap(), "tick");
    }
    match within("abort", stalled.next()).await {
        Err(SourceError::Aborted(reason)) => assert!(reason.starts_with("stalled"), "{reason}"),
        other => panic!("expected a stall abort, got {other:?}"),
    }
    producers.wait_for(0).await;
}

#[tokio::test]
async fn cancelling_one_source_then_all_drops_their_producers() {
    let producers = Producers::default();
    let mut handlers = Handlers::new();
    producers.endless_service(3).register(&mut handlers, "forever");
    let server = start(handlers, Config::default()).await;
    let sock = common::connect(server.addr).await;
    let mut sources = lookup_and_post(&sock, "forever", "").await.unwrap();
    let first = within("source", sources.next()).await.unwrap().unwrap();
    let mut others = Vec::new();
    for _ in 0..2 {
        others.push(within("source", sources.next()).await.unwrap().unwrap());
    }
    producers.wait_for(3).await;
    first.cancel();
    producers.wait_for(2).await;
    // The others go on.
    assert_eq!(within("frame", others[0].next()).await.unwrap().unwrap(), "tick");
    sources.cancel();
    producers.wait_for(0).await;
    for mut source in others {
        let ended = within("abort", async {
            loop {
                match source.next().await {
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        })
        .await;
        assert!(matches!(ended, Err(SourceError::Aborted(ref r)) if r == "cancelled"), "{ended:?}");
    }
    assert!(within("end", sources.next()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_leaves_no_producer() {
    let producers = Producers::default();
    let mut handlers = Handlers::new();
    producers.endless_service(4).register(&mut handlers, "forever");
    let server = WebServer::start(handlers, Config::default(), |g| g).await;
    for sock in [common::connect(server.tcp).await, server.connect(Handlers::new()).await] {
        let mut sources = lookup_and_post(&sock, "forever", "").await.unwrap();
        let mut source = within("source", sources.next()).await.unwrap().unwrap();
        within("frame", source.next()).await.unwrap().unwrap();
        producers.wait_for(4).await;
        sock.close();
        producers.wait_for(0).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_control_part_aborts_the_sources_and_fails_the_request() {
    let producers = Producers::default();
    let mut handlers = Handlers::new();
    let p = producers.clone();
    SourceService::new(move |_sock, _body| {
        let p = p.clone();
        async move { Ok::<_, String>(stream::iter([p.endless("x".into())])) }
    })
    .register(&mut handlers, "forever");
    let server = start(handlers, Config::default()).await;
    let mut peer = WirePeer::connect(server.addr).await;
    let open = Open { frame_window: 1, ..Open::default() };
    peer.send(&common::stream_request(b"s001", "forever", &open.encode(b""))).await;
    let part = |frame: Option<Frame>| match frame {
        Some(Frame::StreamResult { payload, .. }) => payload,
        other => panic!("expected a result part, got {other:?}"),
    };
    assert_eq!(part(peer.next_frame().await), Bytes::from_static(b"a00000000x"));
    assert_eq!(part(peer.next_frame().await), Bytes::from_static(b"f00000000tick"));
    // A grant for a source that was never announced, then garbage: the first one fails it.
    let bad = Control::Credit { source: 7, frames: 1 }.encode();
    peer.send(&Frame::StreamRequestPart { id: Id(*b"s001"), payload: bad.into() }).await;
    let abort = part(peer.next_frame().await);
    assert!(
        matches!(Part::decode(&abort), Ok(Part::Abort { source: 0, reason }) if reason.starts_with("malformed control part")),
        "{abort:?}"
    );
    match peer.next_frame().await {
        Some(Frame::ErrorResult { payload, .. }) => assert_eq!(
            String::from_utf8_lossy(&payload),
            "malformed control part: source 7 was never announced"
        ),
        other => panic!("expected an ErrorResult, got {other:?}"),
    }
    producers.wait_for(0).await;
    // Bytes that are no control part at all.
    peer.send(&common::stream_request(b"s002", "forever", &open.encode(b""))).await;
    part(peer.next_frame().await);
    part(peer.next_frame().await);
    peer.send(&Frame::StreamRequestPart { id: Id(*b"s002"), payload: "hello".into() }).await;
    part(peer.next_frame().await);
    match peer.next_frame().await {
        Some(Frame::ErrorResult { payload, .. }) => assert_eq!(
            String::from_utf8_lossy(&payload),
            "malformed control part: unknown sources tag 0x68"
        ),
        other => panic!("expected an ErrorResult, got {other:?}"),
    }
    // A request without the open prefix.
    peer.send(&common::stream_request(b"s003", "forever", b"q")).await;
    match peer.next_frame().await {
        Some(Frame::ErrorResult { payload, .. }) => assert_eq!(
            String::from_utf8_lossy(&payload),
            "malformed sources request: malformed open part: wrong length"
        ),
        other => panic!("expected an ErrorResult, got {other:?}"),
    }
}

/// A server that answers by hand with the parts a test gives it.
fn scripted(parts: Vec<Vec<u8>>) -> Handlers {
    let mut handlers = Handlers::new();
    handlers.handle_stream("scripted", move |_sock: Sock, _input, mut output| {
        let parts = parts.clone();
        async move {
            for part in parts {
                output.send(part).await?;
            }
            Ok::<_, Error>(())
        }
    });
    handlers
}

#[tokio::test]
async fn the_client_refuses_a_compressed_frame_past_its_limit_before_allocating() {
    let block = vec![0u8; 16];
    let parts = vec![
        Part::Announce { source: 0, header: b"" }.encode(),
        // Claims one byte more than the client's limit.
        Part::Compressed { source: 0, len: 1001, data: &block }.encode(),
        Part::Complete { source: 0 }.encode(),
        Part::Announce { source: 1, header: b"" }.encode(),
        Part::Compressed { source: 1, len: u32::MAX, data: &block }.encode(),
        Part::Complete { source: 1 }.encode(),
    ];
    let server = start(scripted(parts), Config::default()).await;
    let sock = common::connect(server.addr).await;
    let options = SourcesOptions::default().max_frame(1000);
    let mut sources = Sources::open(&sock, "scripted", Bytes::new(), options).await.unwrap();
    for _ in 0..2 {
        let mut source = within("source", sources.next()).await.unwrap().unwrap();
        match within("frame", source.next()).await {
            Err(SourceError::Aborted(reason)) => {
                assert!(reason.contains("exceeds the frame limit of 1000"), "{reason}")
            }
            other => panic!("expected the bomb refused, got {other:?}"),
        }
    }
    assert!(within("end", sources.next()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_source_not_announced_is_a_broken_response() {
    let parts = vec![Part::Frame { source: 3, data: b"?" }.encode()];
    let server = start(scripted(parts), Config::default()).await;
    let sock = common::connect(server.addr).await;
    let mut sources = lookup_and_post(&sock, "scripted", "").await.unwrap();
    match within("error", sources.next()).await {
        Err(Error::Remote(message)) => assert!(message.contains("not open"), "{message}"),
        other => panic!("expected a broken response, got {other:?}"),
    }
}

#[tokio::test]
async fn the_sourcing_timeout_ends_the_request_after_the_open_sources() {
    let mut handlers = Handlers::new();
    SourceService::new(|_sock, _body| async {
        let first = Source::new("first", stream::iter([Ok::<_, String>(Bytes::from("one"))]));
        Ok::<_, String>(stream::iter([first]).chain(stream::pending()))
    })
    .sourcing_timeout(Duration::from_millis(200))
    .register(&mut handlers, "slow");
    let server = start(handlers, Config::default()).await;
    let sock = common::connect(server.addr).await;
    let mut sources = lookup_and_post(&sock, "slow", "").await.unwrap();
    let mut source = within("source", sources.next()).await.unwrap().unwrap();
    assert_eq!(within("frame", source.next()).await.unwrap().unwrap(), "one");
    assert!(within("complete", source.next()).await.unwrap().is_none());
    match within("timeout", sources.next()).await {
        Err(Error::Remote(message)) => assert_eq!(message, "sourcing timeout"),
        other => panic!("expected the sourcing timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn the_serving_timeout_aborts_every_open_source() {
    let producers = Producers::default();
    let mut handlers = Handlers::new();
    let p = producers.clone();
    SourceService::new(move |_sock, _body| {
        let p = p.clone();
        async move { Ok::<_, String>(stream::iter([p.endless("a".into()), p.endless("b".into())])) }
    })
    .serving_timeout(Duration::from_millis(300))
    .register(&mut handlers, "forever");
    let server = start(handlers, Config::default()).await;
    let sock = common::connect(server.addr).await;
    let mut sources = lookup_and_post(&sock, "forever", "").await.unwrap();
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(within("source", sources.next()).await.unwrap().unwrap());
    }
    for mut source in open {
        let ended = within("abort", async {
            loop {
                match source.next().await {
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        })
        .await;
        assert!(
            matches!(ended, Err(SourceError::Aborted(ref r)) if r == "serving timeout"),
            "{ended:?}"
        );
    }
    match within("timeout", sources.next()).await {
        Err(Error::Remote(message)) => assert_eq!(message, "serving timeout"),
        other => panic!("expected the serving timeout, got {other:?}"),
    }
    producers.wait_for(0).await;
}

#[tokio::test]
async fn the_source_window_bounds_announcements_ahead_of_the_reader() {
    let producers = Producers::default();
    let mut handlers = Handlers::new();
    producers.endless_service(10).register(&mut handlers, "ten");
    let server = start(handlers, Config::default()).await;
    let sock = common::connect(server.addr).await;
    let options = SourcesOptions::default().source_window(2);
    let mut sources = Sources::open(&sock, "ten", Bytes::new(), options).await.unwrap();
    // Nothing taken: exactly the window is announced.
    producers.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(producers.live(), 2);
    // Taking one grants one more (half the window, at least one).
    let taken = within("source", sources.next()).await.unwrap().unwrap();
    producers.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(producers.live(), 3);
    drop(taken);
    drop(sources);
    producers.wait_for(0).await;
}

#[tokio::test]
async fn a_request_without_its_open_prefix_is_refused_at_once() {
    let mut handlers = Handlers::new();
    SourceService::new(|_sock, _body| async { Ok::<_, String>(stream::empty::<Source>()) })
        .serving_timeout(Duration::from_secs(600))
        .register(&mut handlers, "none");
    let server = start(handlers, Config::default()).await;
    let mut peer = WirePeer::connect(server.addr).await;
    // An empty first payload is a stream already ended (as Go and gotalk.js send it), so the
    // prefix can never come: refused now, not at the serving timeout.
    peer.send(&common::stream_request(b"s001", "none", b"")).await;
    match within("the refusal", peer.next_frame()).await {
        Some(Frame::ErrorResult { payload, .. }) => assert_eq!(
            String::from_utf8_lossy(&payload),
            "malformed sources request: malformed open part: wrong length"
        ),
        other => panic!("expected an ErrorResult, got {other:?}"),
    }
}

/// A server sock with `handlers` and a client sock, connected in memory: with a paused clock,
/// the service's timers fire at exactly their bound.
async fn in_memory(handlers: Handlers) -> (Sock, Sock) {
    let config = Arc::new(Config::default());
    Sock::pipe((Arc::new(handlers), config.clone()), (Arc::new(Handlers::new()), config))
        .await
        .unwrap()
}

/// Records when it is dropped: a producer's end.
struct DroppedAt(Arc<std::sync::Mutex<Option<tokio::time::Instant>>>);

impl Drop for DroppedAt {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(tokio::time::Instant::now());
    }
}

/// Asserts `at - started` is `bound`, to the timer's millisecond.
fn at_the_bound(started: tokio::time::Instant, at: tokio::time::Instant, bound: Duration) {
    let waited = at - started;
    assert!(waited >= bound && waited <= bound + Duration::from_millis(1), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_source_without_credit_is_aborted_at_the_stall_timeout_and_not_before() {
    let dropped = Arc::new(std::sync::Mutex::new(None));
    let mut handlers = Handlers::new();
    let d = dropped.clone();
    SourceService::new(move |_sock, _body| {
        let guard = DroppedAt(d.clone());
        let frames = stream::repeat_with(move || {
            let _alive = &guard;
            Ok::<_, String>(Bytes::from_static(b"tick"))
        });
        async move { Ok::<_, String>(stream::iter([Source::new("stalls", frames)])) }
    })
    .register(&mut handlers, "endless");
    let (_server, client) = in_memory(handlers).await;
    let options = SourcesOptions::default().frame_window(4);
    let mut sources = Sources::open(&client, "endless", Bytes::new(), options).await.unwrap();
    let mut source = sources.next().await.unwrap().unwrap();
    // The window is spent at once and the reader takes nothing: the default 30 s runs.
    let started = tokio::time::Instant::now();
    tokio::time::sleep_until(started + Duration::from_secs(30) - Duration::from_millis(1)).await;
    assert!(dropped.lock().unwrap().is_none(), "aborted before the stall timeout");
    tokio::time::sleep(Duration::from_millis(2)).await;
    let at = dropped.lock().unwrap().expect("aborted at the stall timeout");
    at_the_bound(started, at, Duration::from_secs(30));
    for _ in 0..4 {
        assert_eq!(source.next().await.unwrap().unwrap(), "tick");
    }
    match source.next().await {
        Err(SourceError::Aborted(reason)) => assert!(reason.starts_with("stalled"), "{reason}"),
        other => panic!("expected a stall abort, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_sourcing_and_serving_timeouts_end_the_request_at_their_bounds() {
    // Sourcing: one source, then a service that never yields another (the default 30 s).
    let mut handlers = Handlers::new();
    SourceService::new(|_sock, _body| async {
        let first = Source::new("first", stream::iter([Ok::<_, String>(Bytes::from("one"))]));
        Ok::<_, String>(stream::iter([first]).chain(stream::pending()))
    })
    .register(&mut handlers, "slow");
    // Serving: two sources that never send a frame (the default 10 minutes).
    SourceService::new(|_sock, _body| async {
        let silent = |h: &'static str| Source::new(h, stream::pending::<Result<Bytes, String>>());
        Ok::<_, String>(stream::iter([silent("a"), silent("b")]))
    })
    .register(&mut handlers, "silent");
    let (_server, client) = in_memory(handlers).await;

    let started = tokio::time::Instant::now();
    let mut sources = lookup_and_post(&client, "slow", "").await.unwrap();
    let mut source = sources.next().await.unwrap().unwrap();
    assert_eq!(source.next().await.unwrap().unwrap(), "one");
    assert!(source.next().await.unwrap().is_none());
    match sources.next().await {
        Err(Error::Remote(message)) => assert_eq!(message, "sourcing timeout"),
        other => panic!("expected the sourcing timeout, got {other:?}"),
    }
    at_the_bound(started, tokio::time::Instant::now(), Duration::from_secs(30));

    let started = tokio::time::Instant::now();
    let mut sources = lookup_and_post(&client, "silent", "").await.unwrap();
    let mut open =
        vec![sources.next().await.unwrap().unwrap(), sources.next().await.unwrap().unwrap()];
    for source in &mut open {
        match source.next().await {
            Err(SourceError::Aborted(reason)) => assert_eq!(reason, "serving timeout"),
            other => panic!("expected the serving timeout, got {other:?}"),
        }
    }
    at_the_bound(started, tokio::time::Instant::now(), Duration::from_secs(600));
    match sources.next().await {
        Err(Error::Remote(message)) => assert_eq!(message, "serving timeout"),
        other => panic!("expected the serving timeout, got {other:?}"),
    }
}
