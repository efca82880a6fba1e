//! Counters of what liveness saw on a registry's connections, for a gateway's metrics.
//!
//! A [`Connections`](crate::Connections) registry owns one set; every connection inserted
//! into it counts its liveness events there, so `/stats` (or any exporter) can show probes,
//! their answers and the dead peers of a whole listener without a hook of the application's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gotalk_protocol::liveness::Event;
use serde::Serialize;

/// Liveness counts since the registry was created: a snapshot, cheap to take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LivenessCounts {
    /// Probes sent (WebSocket Pings, or `$ping` requests over TCP).
    pub probes_sent: u64,
    /// Probes answered with their cookie.
    pub acked: u64,
    /// Probes answered with an error by a peer that lacks `$ping`: alive, unverified.
    pub acked_unverified: u64,
    /// Probes skipped because other traffic had already shown the peer alive.
    pub suppressed: u64,
    /// Connections closed because their peer was declared dead.
    pub dead: u64,
    /// Peers that announced they were done (`$done`).
    pub done: u64,
    /// The mean round trip of the answered probes, in milliseconds; 0 before the first.
    pub mean_rtt_ms: f64,
}

/// The live counters behind [`LivenessCounts`].
#[derive(Debug, Default)]
pub(crate) struct LivenessCounters {
    probes_sent: AtomicU64,
    acked: AtomicU64,
    acked_unverified: AtomicU64,
    suppressed: AtomicU64,
    dead: AtomicU64,
    done: AtomicU64,
    /// The sum of every answered probe's round trip, for the mean.
    rtt_micros: AtomicU64,
}

impl LivenessCounters {
    pub(crate) fn record(&self, event: &Event) {
        let add = |counter: &AtomicU64| counter.fetch_add(1, Ordering::Relaxed);
        match event {
            Event::ProbeSent(_) => add(&self.probes_sent),
            Event::Acked { rtt, verified } => {
                self.rtt_micros.fetch_add(micros(*rtt), Ordering::Relaxed);
                add(if *verified { &self.acked } else { &self.acked_unverified })
            }
            Event::Suppressed => add(&self.suppressed),
            Event::Dead(_) => add(&self.dead),
            Event::Done => add(&self.done),
        };
    }

    pub(crate) fn snapshot(&self) -> LivenessCounts {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let answered = get(&self.acked) + get(&self.acked_unverified);
        let mean_rtt_ms = if answered == 0 {
            0.0
        } else {
            get(&self.rtt_micros) as f64 / answered as f64 / 1000.0
        };
        LivenessCounts {
            probes_sent: get(&self.probes_sent),
            acked: get(&self.acked),
            acked_unverified: get(&self.acked_unverified),
            suppressed: get(&self.suppressed),
            dead: get(&self.dead),
            done: get(&self.done),
            mean_rtt_ms,
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gotalk_protocol::liveness::{Cookie, Death};

    #[test]
    fn every_event_lands_in_its_counter_and_the_mean_rtt_covers_both_kinds_of_answer() {
        let counters = LivenessCounters::default();
        assert_eq!(counters.snapshot(), LivenessCounts::default());
        counters.record(&Event::ProbeSent(Cookie([1; 8])));
        counters.record(&Event::ProbeSent(Cookie([2; 8])));
        counters.record(&Event::Acked { rtt: Duration::from_millis(10), verified: true });
        counters.record(&Event::Acked { rtt: Duration::from_millis(30), verified: false });
        counters.record(&Event::Suppressed);
        counters.record(&Event::Dead(Death::ProbeTimeout(Duration::from_secs(1))));
        counters.record(&Event::Done);
        let counts = counters.snapshot();
        assert_eq!(
            (counts.probes_sent, counts.acked, counts.acked_unverified, counts.suppressed),
            (2, 1, 1, 1)
        );
        assert_eq!((counts.dead, counts.done), (1, 1));
        assert!((counts.mean_rtt_ms - 20.0).abs() < 1e-9, "{}", counts.mean_rtt_ms);
    }
}
