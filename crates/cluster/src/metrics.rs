//! What a cluster bus counts, and the snapshot it reports.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How many of the latest remote relays the latency figures are over.
const WINDOW: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) reconnects: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) overflow: AtomicU64,
    pub(crate) unpublished: AtomicU64,
    pub(crate) relay_ok: AtomicU64,
    pub(crate) relay_full: AtomicU64,
    pub(crate) relay_unknown: AtomicU64,
    pub(crate) relay_unavailable: AtomicU64,
    pub(crate) relay_timeout: AtomicU64,
    latency: Mutex<VecDeque<Duration>>,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Counters {
    pub(crate) fn add_overflow(&self, n: u64) {
        self.overflow.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn latency(&self, took: Duration) {
        let mut window = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        if window.len() == WINDOW {
            window.pop_front();
        }
        window.push_back(took);
    }

    pub(crate) fn snapshot(&self) -> (Dropped, RemoteRelays, Option<Duration>, Option<Duration>) {
        let dropped = Dropped {
            malformed: get(&self.malformed),
            overflow: get(&self.overflow),
            unpublished: get(&self.unpublished),
        };
        let relays = RemoteRelays {
            delivered: get(&self.relay_ok),
            full: get(&self.relay_full),
            unknown: get(&self.relay_unknown),
            unavailable: get(&self.relay_unavailable),
            timeout: get(&self.relay_timeout),
        };
        let mut sorted: Vec<Duration> =
            self.latency.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
        sorted.sort_unstable();
        let at = |q: f64| {
            let last = sorted.len().checked_sub(1)?;
            // The quantile's rank, rounded to the nearest sample.
            let rank = (last as f64 * q).round() as usize;
            sorted.get(rank).copied()
        };
        (dropped, relays, at(0.5), at(0.99))
    }
}

/// A cluster bus's figures, from [`ClusterBus::metrics`](crate::ClusterBus::metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusMetrics {
    /// The bus kind: `redis`, `nats`.
    pub kind: &'static str,
    /// Connected, subscribed and announced.
    pub up: bool,
    /// Sessions opened after the first.
    pub reconnects: u64,
    /// Times the bus came back after being down.
    pub recoveries: u64,
    /// Messages lost, by reason.
    pub dropped: Dropped,
    /// Outcomes of relays to peers on other instances.
    pub relays: RemoteRelays,
    /// The median time of a relay to another instance, over the latest 1024.
    pub relay_p50: Option<Duration>,
    /// The 99th percentile of the same.
    pub relay_p99: Option<Duration>,
    /// Channels this instance subscribes to: one per local peer, one per group with local
    /// members, and the instance's own.
    pub subscribed: usize,
    /// Other instances this one knows of.
    pub instances: usize,
}

/// Messages lost, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dropped {
    /// Received and not understood: another version, or not ours.
    pub malformed: u64,
    /// Received while the incoming queue was full.
    pub overflow: u64,
    /// Group messages, broadcasts and presence changes not published: the bus was down or
    /// its outbound queue full.
    pub unpublished: u64,
}

/// Outcomes of relays to peers on other instances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteRelays {
    /// Queued for the recipient.
    pub delivered: u64,
    /// The recipient's queue was full.
    pub full: u64,
    /// No instance has the id.
    pub unknown: u64,
    /// Not handed to the bus: it was down, or too much was on its way.
    pub unavailable: u64,
    /// Handed over, with no answer in time.
    pub timeout: u64,
}

/// Whether an instance can serve its whole cluster: for a readiness check, which should
/// report [`Degraded`](Readiness::Degraded) without failing liveness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The bus is up: peers and groups of every instance are reachable.
    Up,
    /// The bus is down: only this instance's peers and members are reachable; the bus is
    /// being reconnected.
    Degraded,
}
