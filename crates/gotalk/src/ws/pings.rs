//! The pings a WebSocket peer may send. Each ping asks for a pong, and a peer that floods
//! pings without reading would make us write for it; browsers cannot send pings at all, and
//! other clients send one every few seconds.

use tokio::time::Instant;

/// Pings a peer may send in a burst.
const PING_BURST: f64 = 64.0;
/// Pings a peer may send per second after the burst.
const PINGS_PER_SECOND: f64 = 8.0;

/// The pongs a reader keeps until the read loop takes them: the answers to our probes come
/// one at a time, so more than this are unsolicited.
pub(super) const MAX_PONGS: usize = 4;

/// A token bucket for pings.
#[derive(Debug)]
pub(super) struct PingBudget {
    tokens: f64,
    at: Instant,
}

impl PingBudget {
    pub(super) fn new() -> Self {
        PingBudget { tokens: PING_BURST, at: Instant::now() }
    }

    /// Spends one ping; false when the peer is over its budget.
    pub(super) fn spend(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.at).as_secs_f64() * PINGS_PER_SECOND;
        self.tokens = (self.tokens + earned).min(PING_BURST);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_ping_budget_refills_eight_a_second_up_to_the_burst() {
        let mut budget = PingBudget::new();
        assert!((0..64).all(|_| budget.spend()), "the burst");
        assert!(!budget.spend(), "one past the burst");
        // 999 ms earn 7.992 pings: 7 whole ones.
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!((0..7).all(|_| budget.spend()));
        assert!(!budget.spend(), "the eighth is not earned yet");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(budget.spend(), "now it is");
        assert!(!budget.spend());
        // A long silence refills the burst and no more.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!((0..64).all(|_| budget.spend()));
        assert!(!budget.spend());
    }
}
