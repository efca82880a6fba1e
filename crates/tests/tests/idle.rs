//! Idle connections over virtual time: with the default config, a Go-style peer whose read
//! deadline is 30 s stays connected to an idle sock indefinitely on the heartbeats both send,
//! and is never sent a `$ping` it would hand to its handlers; a silent peer is declared dead
//! within the probes' bound (probed with `$ping` when it is one of ours), or, with probes
//! off, dropped by the read timeout; both with ProtocolError 3.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use gotalk::protocol::{encode_version, Decoder, Frame};
use gotalk::{CloseReason, Config, Handlers, LivenessConfig, Sock};
use gotalk::{ConnInfo, TransportKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// The hello a client of ours says after its version (`gotalk::protocol::reserved`).
const HELLO: &[u8] = b"R$hi!00000000";

/// Starts a sock (a client: it says its hello first) with `config` on one end of an
/// in-memory pipe; the test speaks raw gotalk on the other end, as a peer of ours (it says
/// the hello back) or as Go's (it drops the hello, a result for no request of its own).
async fn idle_sock(config: Config, ours: bool) -> (Sock, DuplexStream) {
    let (ours_end, mut theirs) = tokio::io::duplex(4096);
    let mut version = BytesMut::new();
    encode_version(&mut version);
    theirs.write_all(&version).await.expect("send version");
    if ours {
        theirs.write_all(HELLO).await.expect("send hello");
    }
    let (r, w) = gotalk::transport::io(ours_end);
    let info = ConnInfo::new(TransportKind::Memory, None, None);
    let sock = Sock::start(r, w, Arc::new(Handlers::new()), Arc::new(config), info)
        .await
        .expect("handshake");
    let mut head = [0u8; 2 + HELLO.len()];
    theirs.read_exact(&mut head).await.expect("read version and hello");
    assert_eq!(&head[..2], b"01");
    assert_eq!(&head[2..], HELLO);
    (sock, theirs)
}

/// Reads the next frame, failing if none arrives within `deadline`, as Go's reader does with
/// its read deadline.
async fn next_frame(peer: &mut DuplexStream, buf: &mut BytesMut, deadline: Duration) -> Frame {
    let mut decoder = Decoder::new();
    loop {
        if let Some(frame) = decoder.decode(buf).expect("valid frame") {
            return frame;
        }
        let read = tokio::time::timeout(deadline, peer.read_buf(buf)).await;
        let n = read.expect("peer's read deadline expired").expect("read");
        assert!(n > 0, "connection closed");
    }
}

#[tokio::test(start_paused = true)]
async fn go_peer_with_a_30s_read_deadline_stays_connected_while_idle() {
    let (sock, mut peer) = idle_sock(Config::default(), false).await;
    let mut buf = BytesMut::new();
    let started = tokio::time::Instant::now();
    // An hour of virtual time in which the sock has nothing to say: only its heartbeats keep
    // the peer's 30 s deadline from expiring. The peer heartbeats back every 20 s, as Go does,
    // which keeps the sock's read timeout from expiring, and keeps it within the liveness
    // bound (45 s): the probes due after 15 s of silence are withheld, since Go would hand
    // `$ping` to its catch-all handler.
    let mut heartbeats = 0;
    while heartbeats < 180 {
        match next_frame(&mut peer, &mut buf, Duration::from_secs(30)).await {
            Frame::Heartbeat { load: 0, .. } => {
                heartbeats += 1;
                peer.write_all(b"h000054d7de9a").await.expect("peer heartbeat");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(started.elapsed() >= Duration::from_secs(3600), "{:?}", started.elapsed());
    assert!(!sock.is_closed(), "closed: {:?}", sock.close_reason());
    assert!(!sock.peer_understands_reserved());
    assert_eq!(sock.last_heartbeat().map(|h| h.time), Some(0x54d7de9a));
}

#[tokio::test(start_paused = true)]
async fn silent_peer_is_declared_dead_by_the_probes_within_their_bound() {
    for ours in [true, false] {
        let config = Config::default().heartbeat_interval(None);
        let (sock, mut peer) = idle_sock(config, ours).await;
        let started = tokio::time::Instant::now();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.expect("read until close");
        // Two probes to a peer of ours (at 15 s and 30 s of silence), none to Go's, then the
        // timeout, announced, at 45 s.
        let text = String::from_utf8_lossy(&rest);
        assert_eq!(text.matches("$ping").count(), if ours { 2 } else { 0 }, "{text}");
        assert!(text.ends_with("f00000003"), "{text}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(45) && waited < Duration::from_secs(46),
            "{waited:?}"
        );
        let reason = sock.closed().await;
        assert!(matches!(reason, CloseReason::PeerDead(_)) && reason.is_timeout(), "{reason:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn with_probes_off_a_silent_peer_is_dropped_by_the_read_timeout_with_protocol_error_3() {
    let mut config = Config::default().heartbeat_interval(None);
    let no_probes = LivenessConfig { interval: None, max_unacked: 0, ..config.liveness_config() };
    config = config.liveness(no_probes).expect("valid");
    let (sock, mut peer) = idle_sock(config, true).await;
    let started = tokio::time::Instant::now();
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest).await.expect("read until close");
    assert_eq!(rest, b"f00000003", "the timeout is announced before the close");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(90) && waited < Duration::from_secs(91), "{waited:?}");
    assert_eq!(sock.closed().await, CloseReason::ReadTimeout(Duration::from_secs(90)));
}
