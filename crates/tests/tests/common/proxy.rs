//! A TCP proxy between a real client and a real server that injects network faults: it can
//! go silent (a half-open connection: nothing gets through, not even a close), or cut the
//! connection in both directions once a chosen number of bytes has gone through one way.
//!
//! A proxy is meant for one connection at a time: its switches and byte counts are shared by
//! every connection it accepts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Which way bytes flow through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// From the client to the server.
    Up,
    /// From the server to the client.
    Down,
}

/// One direction's count of bytes forwarded, and where it is to be cut.
#[derive(Debug, Default)]
struct Flow {
    forwarded: AtomicU64,
    /// The byte count at which the connection is cut; `u64::MAX` for never.
    cut_at: AtomicU64,
}

impl Flow {
    fn new() -> Self {
        Flow { forwarded: AtomicU64::new(0), cut_at: AtomicU64::new(u64::MAX) }
    }
}

#[derive(Debug)]
struct State {
    swallow: AtomicBool,
    up: Flow,
    down: Flow,
    /// Cancelled when a cut has happened.
    cut: CancellationToken,
}

impl State {
    fn flow(&self, way: Way) -> &Flow {
        match way {
            Way::Up => &self.up,
            Way::Down => &self.down,
        }
    }
}

/// A fault-injecting proxy in front of one target address.
pub(crate) struct Proxy {
    /// Where clients connect.
    pub(crate) addr: SocketAddr,
    state: Arc<State>,
}

impl Proxy {
    /// Starts a proxy that forwards everything to `target` until told otherwise.
    pub(crate) async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(State {
            swallow: AtomicBool::new(false),
            up: Flow::new(),
            down: Flow::new(),
            cut: CancellationToken::new(),
        });
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(target).await.expect("proxy connects to target");
                let _ = server.set_nodelay(true);
                let _ = client.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, Way::Up, shared.clone()));
                tokio::spawn(pump(sr, cw, Way::Down, shared.clone()));
            }
        });
        Proxy { addr, state }
    }

    /// From now on, reads and drops everything in both directions and holds the connection
    /// open: a network that has gone silent.
    pub(crate) fn swallow(&self) {
        self.state.swallow.store(true, Ordering::SeqCst);
    }

    /// How many bytes have gone through `way` so far.
    pub(crate) fn forwarded(&self, way: Way) -> u64 {
        self.state.flow(way).forwarded.load(Ordering::SeqCst)
    }

    /// Cuts the connection, both ways, once `more` further bytes have gone through `way`:
    /// exactly that many are delivered, then both sockets close.
    pub(crate) fn cut_after(&self, way: Way, more: u64) {
        let flow = self.state.flow(way);
        flow.cut_at.store(flow.forwarded.load(Ordering::SeqCst) + more, Ordering::SeqCst);
    }

    /// Waits until a cut has happened.
    pub(crate) async fn cut(&self) {
        self.state.cut.cancelled().await;
    }
}

/// Forwards bytes one way, honouring the swallow switch and the cut offset.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, way: Way, state: Arc<State>) {
    let flow = state.flow(way);
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = state.cut.cancelled() => break,
        };
        if state.swallow.load(Ordering::SeqCst) {
            continue;
        }
        let sent = flow.forwarded.load(Ordering::SeqCst);
        let room = flow.cut_at.load(Ordering::SeqCst).saturating_sub(sent);
        let take = n.min(usize::try_from(room).unwrap_or(usize::MAX));
        if to.write_all(&buf[..take]).await.is_err() {
            break;
        }
        flow.forwarded.fetch_add(take as u64, Ordering::SeqCst);
        if take < n || sent + take as u64 == flow.cut_at.load(Ordering::SeqCst) {
            state.cut.cancel();
            break;
        }
    }
    if state.swallow.load(Ordering::SeqCst) {
        // Half-open: even the close does not get through; hold the other side open.
        std::future::pending::<()>().await;
    }
    // Dropping both halves closes this direction; the other pump sees the cut and closes its
    // own, so each end sees its connection end.
}
