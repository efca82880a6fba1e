//! Accepting connections within limits: the accept loop, per-address limits and refusals,
//! shared by the TCP listener and the gateway's HTTP server.

pub use crate::per_addr::{default_reserve, AddrLimit, AddrPermit, Refused, DEFAULT_PER_ADDR};

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
