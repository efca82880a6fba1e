//! What a WebSocket costs the real `gotalk serve` process after large messages, in resident
//! memory (VmRSS from /proc): an idle socket keeps no buffer sized by the largest message it
//! carried, in or out, and a broadcast holds one copy of its payload, not one per socket.
//!
//! Each socket moves its 16 MiB in turn, so what the process keeps from one is measured
//! rather than many at once. The allocator keeps some freed memory for reuse (a payload's
//! worth in each of its per-thread arenas), which is why the bounds are a few payloads in
//! total ([`FEW`]), against one or two payloads *per socket* for a transport that keeps its
//! buffers: 20 sockets that each kept 16 MiB would hold 320 MiB.

mod common;

use std::time::Duration;

use common::process::ServeProcess;
use common::raw_ws::{RawWs, BINARY};
use tokio::net::TcpStream;

const SOCKETS: usize = 20;
const PAYLOAD: usize = 16 << 20;
const MIB: usize = 1 << 20;
/// The most the server may grow by, in payloads, whatever the number of sockets.
const FEW: usize = 5;

/// `gotalk serve` with nothing sent unasked (heartbeats, probes), so raw sockets stay idle.
async fn serve() -> ServeProcess {
    let args = ["--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--heartbeat", "0"];
    ServeProcess::start(&[&args[..], &["--liveness", "off"]].concat()).await
}

/// A field of /proc/PID/status, in bytes.
fn status(served: &ServeProcess, field: &str) -> usize {
    let pid = served.child.id().expect("serve is running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status.lines().find(|l| l.starts_with(field)).expect("the field");
    let kib: usize = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("kB");
    kib * 1024
}

fn rss(served: &ServeProcess) -> usize {
    status(served, "VmRSS:")
}

/// The resident set once it has stopped falling: freeing is done by the server's tasks,
/// a moment after the last byte was written.
async fn settled_rss(served: &ServeProcess) -> usize {
    let mut last = rss(served);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rss(served);
        if now >= last {
            return now;
        }
        last = now;
    }
    last
}

/// A raw WebSocket past both handshakes. The demo tells every new socket its relay id, and
/// asks it `chat.ping`, which a page answers; this one refuses it, so nothing stays pending.
async fn socket(served: &ServeProcess) -> RawWs<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", served.http_port())).await.unwrap();
    let mut ws = RawWs::upgrade(stream, "/gotalk/", "localhost", &[]).await.expect("upgrade");
    ws.gotalk_handshake().await;
    loop {
        let header = ws.data().await;
        let size = std::str::from_utf8(&header[header.len() - 8..]).unwrap();
        if usize::from_str_radix(size, 16).unwrap() > 0 {
            ws.data().await;
        }
        if header.starts_with(b"r") && header.ends_with(b"chat.ping00000004") {
            let mut refusal = b"E".to_vec();
            refusal.extend_from_slice(&header[1..5]);
            refusal.extend_from_slice(b"00000000");
            ws.frame(BINARY, &refusal).await;
            return ws;
        }
        assert!(header.starts_with(b"n"), "only notifications come first: {header:?}");
    }
}

/// An `echo` of `payload` with id `id`, sent as one message; the result is skipped.
async fn echo(ws: &mut RawWs<TcpStream>, id: &str, payload: &[u8]) {
    let header = format!("r{id}004echo{:08x}", payload.len());
    ws.frame_zero_key(BINARY, &[header.as_bytes(), payload]).await;
    assert_eq!(ws.data().await, format!("R{id}{:08x}", payload.len()).as_bytes());
    if !payload.is_empty() {
        assert_eq!(ws.skip_data().await, (BINARY, payload.len()));
    }
}

/// Opens the sockets and warms each up with a small echo.
async fn sockets(served: &ServeProcess) -> Vec<RawWs<TcpStream>> {
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        let mut ws = socket(served).await;
        echo(&mut ws, "0001", b"warm").await;
        sockets.push(ws);
    }
    sockets
}

fn report(what: &str, before: usize, after: usize) -> usize {
    let grown = after.saturating_sub(before);
    eprintln!(
        "{what}: {} MiB before, {} MiB after: {:.2} MiB per socket",
        before / MIB,
        after / MIB,
        grown as f64 / MIB as f64 / SOCKETS as f64
    );
    grown
}

#[tokio::test]
async fn idle_websockets_keep_no_buffer_sized_by_a_16_mib_message_or_echo() {
    let served = serve().await;
    let mut sockets = sockets(&served).await;
    let payload = vec![b'x'; PAYLOAD];
    let before = settled_rss(&served).await;

    // 16 MiB in on each socket: a notification nobody handles, then a small echo to know the
    // server has read it all.
    for ws in &mut sockets {
        let header = format!("n004none{PAYLOAD:08x}");
        ws.frame_zero_key(BINARY, &[header.as_bytes(), &payload]).await;
        echo(ws, "0002", b"ok").await;
    }
    let after_in = settled_rss(&served).await;
    let grown = report("after 16 MiB in on each socket", before, after_in);
    assert!(grown <= FEW * PAYLOAD, "the idle sockets grew the server by {} MiB", grown / MIB);

    // 16 MiB in and out on each socket.
    for ws in &mut sockets {
        echo(ws, "0003", &payload).await;
    }
    let after_echo = settled_rss(&served).await;
    let grown = report("after a 16 MiB echo on each socket", before, after_echo);
    assert!(grown <= FEW * PAYLOAD, "the idle sockets grew the server by {} MiB", grown / MIB);

    // The sockets are still open, and serve.
    for ws in &mut sockets {
        echo(ws, "0004", b"still here").await;
    }
}

#[tokio::test]
async fn a_16_mib_broadcast_to_20_idle_websockets_holds_one_copy_not_twenty() {
    let served = serve().await;
    let mut sockets = sockets(&served).await;
    let before = settled_rss(&served).await;
    let peak_before = status(&served, "VmHWM:");

    // A program over TCP broadcasts 16 MiB; every socket reads it.
    let program = gotalk::tcp::connect(
        served.tcp.trim_start_matches("tcp://"),
        std::sync::Arc::new(gotalk::Handlers::new()),
        gotalk::Config::default(),
    )
    .await
    .expect("tcp connect");
    let reached = tokio::spawn(async move {
        let payload = bytes::Bytes::from(vec![b'b'; PAYLOAD]);
        let reached = program.buffer_request("broadcast", payload).await.expect("broadcast");
        (program, reached)
    });
    for ws in &mut sockets {
        assert_eq!(ws.data().await, format!("n009broadcast{PAYLOAD:08x}").as_bytes());
        assert_eq!(ws.skip_data().await, (BINARY, PAYLOAD));
    }
    let (program, reached) = reached.await.unwrap();
    assert_eq!(&reached[..], (SOCKETS + 1).to_string().as_bytes(), "every socket and the program");
    drop(program);

    let after = settled_rss(&served).await;
    let peak = status(&served, "VmHWM:");
    eprintln!("peak: {} MiB before, {} MiB during", peak_before / MIB, peak / MIB);
    let grown = report("after a 16 MiB broadcast", before, after);
    assert!(grown <= FEW * PAYLOAD, "the idle sockets grew the server by {} MiB", grown / MIB);
    let peak_grown = peak.saturating_sub(before);
    assert!(
        peak_grown <= (FEW + 1) * PAYLOAD,
        "the broadcast took {} MiB at its peak, for {} MiB sent to {SOCKETS} sockets",
        peak_grown / MIB,
        PAYLOAD / MIB
    );
    for ws in &mut sockets {
        echo(ws, "0002", b"still here").await;
    }
}
