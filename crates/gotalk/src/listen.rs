//! Accepting connections within limits: the limits every listener takes
//! ([`ListenerLimits`]), the accept loop, per-address counts and refusals, shared by the TCP
//! listener, the gateway's HTTP server and the gateway's WebSockets.

pub use crate::per_addr::{AddrLimit, AddrPermit, Refused};

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::per_addr::{default_reserve, DEFAULT_PER_ADDR};

/// How many connections a listener holds, how they are shared between addresses, and how
/// long its shutdown waits. One value serves every listener: [`tcp::Server`],
/// and the gateway's HTTP server and WebSockets each take it with `limits`, and each keeps
/// its own count. Setters take and return it by value.
///
/// ```
/// use std::time::Duration;
/// use gotalk::listen::ListenerLimits;
///
/// let limits = ListenerLimits::default()
///     .max_connections(2_000)
///     .max_connections_per_addr(50)
///     .shutdown_timeout(Duration::from_secs(5));
/// let server = gotalk::tcp::Server::new(Default::default(), Default::default()).limits(limits);
/// # drop(server);
/// ```
///
/// [`tcp::Server`]: crate::tcp::Server
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct ListenerLimits {
    max_connections: usize,
    max_per_addr: usize,
    reserve: Option<usize>,
    shutdown_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 10_000,
            max_per_addr: DEFAULT_PER_ADDR,
            reserve: None,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl ListenerLimits {
    /// How many connections may be open at once. Default 10,000; at least 1. Past it a TCP
    /// listener (and the HTTP server) stops accepting until one closes, so new peers wait in
    /// the kernel's backlog; a WebSocket upgrade gets 503 with `Retry-After`. The HTTP
    /// server does not count connections upgraded to WebSockets: the gateway does.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// How many connections one remote address may have open at once (IPv6: one /64).
    /// Default 1,000; at least 1. Past it, a TCP peer gets the version, then ProtocolError
    /// `f00000000` (abnormal), then the connection closes; a plain HTTP client gets 429 with
    /// `Retry-After` before its request is read; a WebSocket upgrade gets 429 with
    /// `Retry-After` (the gateway needs the peer's address, axum's
    /// `ConnectInfo<SocketAddr>`, which the gateway's HTTP server provides). Over TLS the
    /// connection is closed before the TLS handshake, which would cost more than the
    /// refusal. Behind a proxy every peer shares the proxy's address: raise this to
    /// [`max_connections`](Self::max_connections) and let the proxy limit its clients.
    pub fn max_connections_per_addr(mut self, n: usize) -> Self {
        self.max_per_addr = n.max(1);
        self
    }

    /// How many of the [`max_connections`](Self::max_connections) places are kept for
    /// addresses that hold few connections. Default: a tenth of them, or none when
    /// [`max_connections_per_addr`](Self::max_connections_per_addr) lets one address take
    /// every place (behind a proxy). Once `max_connections - reserve` are open, a peer from
    /// an address holding a tenth of the reserve or more (at least 1) is refused as one past
    /// its address's limit is (an HTTP client or WebSocket upgrade with 503 rather than 429),
    /// and one from an address holding fewer still gets in: a few addresses filling the
    /// listener cannot lock out the others. 0 turns it off.
    pub fn connection_reserve(mut self, n: usize) -> Self {
        self.reserve = Some(n);
        self
    }

    /// How long shutdown waits for requests in flight before closing connections. Default
    /// 10 s. It bounds the whole shutdown: at the deadline, writes still pending to peers
    /// that do not read are given up rather than waited out (the write timeout), and HTTP
    /// connections still open are dropped.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// A fresh count of places under these limits, for one listener.
    pub fn places(&self) -> Places {
        let reserve = self
            .reserve
            .unwrap_or_else(|| default_reserve(self.max_connections, self.max_per_addr));
        Places {
            total: Arc::new(Semaphore::new(self.max_connections)),
            per_addr: AddrLimit::new(self.max_per_addr, self.max_connections, reserve),
            shutdown_timeout: self.shutdown_timeout,
        }
    }
}

/// One listener's count of its places, made by [`ListenerLimits::places`]. Clones share it.
#[derive(Clone, Debug)]
pub struct Places {
    /// A permit per open connection.
    pub total: Arc<Semaphore>,
    /// The count per address, with the reserve.
    pub per_addr: AddrLimit,
    /// How long shutdown waits for requests in flight.
    pub shutdown_timeout: Duration,
}

/// The first pause after a failed accept; it doubles on each further failure.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest pause between accepts after repeated failures (running out of file
/// descriptors, say).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The pause after each failed accept: from [`ACCEPT_BACKOFF_MIN`], doubling on each further
/// failure up to [`ACCEPT_BACKOFF_MAX`], and back to the start after a success. A burst of
/// failures (EMFILE) then costs a few log lines and no busy loop, and a recovered listener is
/// quick again.
#[derive(Debug)]
struct AcceptBackoff {
    next: Duration,
}

impl AcceptBackoff {
    fn new() -> Self {
        AcceptBackoff { next: ACCEPT_BACKOFF_MIN }
    }

    /// The pause for this failure; the next one's doubles.
    fn failed(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(ACCEPT_BACKOFF_MAX);
        pause
    }

    fn succeeded(&mut self) {
        self.next = ACCEPT_BACKOFF_MIN;
    }
}

/// Accepts connections until `shutdown` completes, each holding a permit from `limit`. At the
/// limit the loop stops accepting until a permit is returned, so new peers wait in the
/// kernel's backlog instead of costing memory here.
pub async fn accept_loop<F: Future>(
    listener: &TcpListener,
    limit: Arc<Semaphore>,
    mut shutdown: Pin<&mut F>,
    mut accepted: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
) {
    let mut backoff = AcceptBackoff::new();
    loop {
        let next = tokio::select! {
            _ = &mut shutdown => return,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => tokio::select! {
                    _ = &mut shutdown => return,
                    next = listener.accept() => next.map(|a| (a, permit)),
                },
                Err(_) => return,
            },
        };
        match next {
            Ok(((stream, peer), permit)) => {
                backoff.succeeded();
                let _ = stream.set_nodelay(true);
                accepted(stream, peer, permit);
            }
            Err(e) => {
                let pause = backoff.failed();
                tracing::warn!(error = %e, ?pause, "accept failed");
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// How many refused peers a listener reads from at once (see `crate::linger`). Refused peers
/// are not bounded by the per-address limits as connections are, so past this they are
/// closed without lingering: a flood of refused connections costs no more sockets than this,
/// nor any of the listener's places.
const LINGERING_REFUSALS: usize = 256;

/// Turns peers away with a message they can read.
#[derive(Clone, Debug)]
pub struct Refuser {
    lingering: Arc<Semaphore>,
}

impl Default for Refuser {
    fn default() -> Self {
        Self::new()
    }
}

impl Refuser {
    /// A refuser that lets at most a few hundred refused peers linger at once.
    pub fn new() -> Self {
        Refuser { lingering: Arc::new(Semaphore::new(LINGERING_REFUSALS)) }
    }

    /// Writes `refusal` to a peer turned away by a per-address limit or the reserve,
    /// holding `place` (the listener's permit) meanwhile so refusals count against the
    /// listener's limit as connections do. The write gets a second at most: a peer that
    /// does not read is not waited for. Then the place is given back and, while fewer than
    /// 256 refused peers linger, the peer is read from for a while so it reads the refusal
    /// rather than a reset.
    pub async fn refuse(&self, stream: TcpStream, refusal: &[u8], place: OwnedSemaphorePermit) {
        use tokio::io::AsyncWriteExt;
        let (reader, mut writer) = stream.into_split();
        let write = async {
            writer.write_all(refusal).await?;
            writer.shutdown().await
        };
        let written = tokio::time::timeout(Duration::from_secs(1), write).await;
        drop(place);
        if let (Ok(Ok(())), Ok(_lingering)) = (written, self.lingering.try_acquire()) {
            let mut reader = crate::transport::TcpReader(reader);
            crate::linger::discard_input(&mut reader, &mut bytes::BytesMut::new()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limits_hold_at_their_edges() {
        let places = ListenerLimits::default().places();
        assert_eq!(places.total.available_permits(), 10_000);
        assert_eq!(places.shutdown_timeout, Duration::from_secs(10));
        let ip = std::net::IpAddr::from([192, 0, 2, 1]);
        let held: Vec<_> = (0..1_000).map(|_| places.per_addr.try_acquire(ip).unwrap()).collect();
        assert_eq!(places.per_addr.try_acquire(ip).unwrap_err(), Refused::AddressFull);
        drop(held);
    }

    #[test]
    fn limits_below_one_are_one() {
        let places =
            ListenerLimits::default().max_connections(0).max_connections_per_addr(0).places();
        assert_eq!(places.total.available_permits(), 1);
        let ip = std::net::IpAddr::from([192, 0, 2, 1]);
        let _one = places.per_addr.try_acquire(ip).unwrap();
        assert_eq!(places.per_addr.try_acquire(ip).unwrap_err(), Refused::AddressFull);
    }

    #[test]
    fn backoff_doubles_from_100_ms_to_30_s_and_resets_on_success() {
        let mut backoff = AcceptBackoff::new();
        let pauses: Vec<u64> = (0..12).map(|_| backoff.failed().as_millis() as u64).collect();
        assert_eq!(
            pauses,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]
        );
        backoff.succeeded();
        assert_eq!(backoff.failed(), Duration::from_millis(100));
        assert_eq!(backoff.failed(), Duration::from_millis(200));
    }
}
