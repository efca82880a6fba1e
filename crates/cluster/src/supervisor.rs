//! The instance's own reconnect loop. Client libraries' reconnects are not trusted (a
//! subscriber that never resubscribes after a long outage looks healthy), so a session is
//! used until anything about it fails, then thrown away and replaced:
//!
//! 1. connect, with exponential backoff and full jitter between attempts;
//! 2. subscribe every channel in batches (the instance's own, `all`, `presence`, each
//!    peer's, each group's);
//! 3. tell the others who is here, ask who is there, and report up (a recovery, after the
//!    first time);
//! 4. handle what comes in, beat, expire silent instances, sweep groups nobody is in, and
//!    probe: after a quiet spell the instance sends itself a message, and if that does not
//!    come back the session is dead however healthy it looks.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{interval_at, sleep, sleep_until, timeout, Instant, MissedTickBehavior};

use crate::bus::{incoming_queue, Inner, Live};
use crate::link::{Incoming, LinkError};
use crate::metrics::bump;

/// A connected session and what comes in on it.
pub(crate) type Connected = (Live, mpsc::Receiver<Incoming>);

pub(crate) async fn connect(inner: &Inner) -> Result<Connected, LinkError> {
    let (tx, rx) = incoming_queue(inner);
    match timeout(inner.settings.connect_timeout, inner.link.connect(tx)).await {
        Ok(Ok(session)) => Ok((Live::new(session), rx)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(LinkError("connecting took too long".to_owned())),
    }
}

/// The delay before reconnect attempt `attempt` (from 0): drawn at random below an
/// exponentially growing bound, so instances that lost the bus together do not return
/// together.
fn backoff(inner: &Inner, attempt: u32) -> Duration {
    let (min, max) = (inner.settings.backoff_min, inner.settings.backoff_max);
    let bound = min.saturating_mul(1u32 << attempt.min(16)).min(max);
    bound.mul_f64(rand::random::<f64>())
}

enum End {
    Shutdown,
    Failed,
}

pub(crate) async fn run(inner: Arc<Inner>, first: Connected) {
    let mut next = Some(first);
    let mut attempt = 0u32;
    let mut was_up = false;
    loop {
        let (live, incoming) = match next.take() {
            Some(connected) => connected,
            None => {
                tokio::select! {
                    () = inner.shutdown.cancelled() => return,
                    () = sleep(backoff(&inner, attempt)) => {}
                }
                attempt = attempt.saturating_add(1);
                match connect(&inner).await {
                    Ok(connected) => {
                        bump(&inner.counters.reconnects);
                        connected
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.0, attempt, "cluster bus: cannot reconnect");
                        continue;
                    }
                }
            }
        };
        let live = Arc::new(live);
        let channels = inner.install(&live);
        let mut subscribed = true;
        for batch in channels.chunks(inner.settings.subscribe_batch) {
            let wait = inner.settings.connect_timeout;
            if !matches!(timeout(wait, live.session.subscribe(batch)).await, Ok(Ok(()))) {
                subscribed = false;
                break;
            }
        }
        if !subscribed {
            tracing::warn!("cluster bus: resubscribing failed");
            inner.uninstall(&live);
            continue;
        }
        inner.announce(&live, was_up);
        if was_up {
            tracing::info!(channels = channels.len(), "cluster bus: back up, resubscribed");
        }
        was_up = true;
        attempt = 0;
        let end = serve(&inner, &live, incoming).await;
        inner.uninstall(&live);
        match end {
            End::Shutdown => return,
            End::Failed => tracing::warn!("cluster bus: down, reconnecting"),
        }
    }
}

async fn serve(
    inner: &Arc<Inner>,
    live: &Arc<Live>,
    mut incoming: mpsc::Receiver<Incoming>,
) -> End {
    let settings = &inner.settings;
    let start = Instant::now();
    let mut beat = interval_at(start + settings.heartbeat, settings.heartbeat);
    beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let sweep_every =
        settings.group_linger.clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut sweep = interval_at(start + sweep_every, sweep_every);
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    // When a probe is out: the time by which something must have come back.
    let mut probing: Option<Instant> = None;
    loop {
        let check = probing.unwrap_or(heard + settings.probe_idle);
        tokio::select! {
            biased;
            () = inner.shutdown.cancelled() => return End::Shutdown,
            () = live.failed.cancelled() => return End::Failed,
            message = incoming.recv() => match message {
                Some(message) => {
                    heard = Instant::now();
                    probing = None;
                    inner.handle(live, message);
                }
                // The session's reader ended: its connection is gone.
                None => {
                    live.fail("the connection closed");
                    return End::Failed;
                }
            },
            () = sleep_until(check) => {
                if probing.is_some() {
                    live.fail("the liveness probe did not come back");
                    return End::Failed;
                }
                inner.probe(live);
                probing = Some(Instant::now() + settings.probe_timeout);
            }
            _ = beat.tick() => inner.heartbeat(live),
            _ = sweep.tick() => inner.sweep(live),
        }
    }
}
