//! The accept loop shared by the TCP listener and the HTTP server.

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

/// Accepts connections until `shutdown` completes, each holding a permit from `limit`. At the
/// limit the loop stops accepting until a permit is returned, so new peers wait in the
/// kernel's backlog instead of costing memory here.
pub(crate) async fn accept_loop<F: Future>(
    listener: &TcpListener,
    limit: Arc<Semaphore>,
    mut shutdown: Pin<&mut F>,
    mut accepted: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
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
                backoff = ACCEPT_BACKOFF_MIN;
                let _ = stream.set_nodelay(true);
                accepted(stream, peer, permit);
            }
            Err(e) => {
                tracing::warn!(error = %e, pause = ?backoff, "accept failed");
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}
