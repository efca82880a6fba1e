//! A registry of live connections, shared by the TCP listener and the WebSocket gateway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::error::CloseReason;
use crate::metrics::{LivenessCounters, LivenessCounts};
use crate::sock::Sock;

/// The live connections of a listener or gateway, so they can be counted, reached and
/// drained.
#[derive(Debug, Default, Clone)]
pub struct Connections {
    inner: Arc<Mutex<HashMap<u64, Sock>>>,
    liveness: Arc<LivenessCounters>,
    opened: Arc<AtomicU64>,
}

/// Removes a connection from its registry when its transport shuts down.
struct Registered {
    registry: Weak<Mutex<HashMap<u64, Sock>>>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            registry.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
        }
    }
}

impl Connections {
    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every open connection.
    pub fn socks(&self) -> Vec<Sock> {
        self.lock().values().cloned().collect()
    }

    /// Tracks `sock` until its transport shuts down.
    pub fn insert(&self, sock: &Sock) {
        let id = sock.info().id;
        self.lock().insert(id, sock.clone());
        self.opened.fetch_add(1, Ordering::Relaxed);
        sock.attach(Registered { registry: Arc::downgrade(&self.inner), id });
        sock.count_liveness_in(self.liveness.clone());
    }

    /// How many connections were ever inserted, closed ones included.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// The bytes waiting in the send queues of every open connection (see
    /// [`Sock::queued_bytes`]).
    pub fn queued_bytes(&self) -> usize {
        self.lock().values().map(Sock::queued_bytes).sum()
    }

    /// What liveness saw on the connections of this registry so far, closed ones included.
    pub fn liveness(&self) -> LivenessCounts {
        self.liveness.snapshot()
    }

    /// Ends every connection gracefully, waiting up to `deadline` for requests in flight,
    /// then closes what is left at once: writes still pending then (to a peer that does not
    /// read) are given up, so the drain takes no longer than `deadline`.
    pub async fn drain(&self, deadline: Duration) {
        let socks = self.socks();
        let ending = socks.iter().map(|sock| {
            let sock = sock.clone();
            async move {
                if tokio::time::timeout(deadline, sock.end_with(CloseReason::Shutdown))
                    .await
                    .is_err()
                {
                    sock.abort(CloseReason::Shutdown);
                    sock.closed().await;
                }
            }
        });
        futures_util::future::join_all(ending).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Sock>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
