//! When an open connection has gone silent: the browser's dead-server rule, free of I/O and
//! clocks.
//!
//! A page cannot send WebSocket Pings, and a server that has hung (a stopped process, a
//! sleeping host, a NAT that forgot the connection) closes nothing: the socket just stays
//! quiet. But the server sends heartbeats, every 20 s by default, so a silence much longer
//! than their gap means it is gone. [`Silence`] is told what arrives and when, and answers
//! whether the connection is dead and how soon to ask again. Tests drive it with made-up
//! times.
//!
//! **The rule**: an open connection is dead once nothing has arrived for longer than its
//! allowance: `deadAfter` when the page sets it, otherwise two of the server's heartbeat gaps
//! plus 5 s, once two heartbeats have shown the gap (the longest seen counts, so a pair
//! delayed and delivered together cannot shrink it). Any message counts as a sign of life,
//! even a part of a large one.

/// Added to two heartbeat gaps: room for a busy server and a slow network.
pub const SLACK_MS: f64 = 5_000.0;
/// The shortest time between two checks.
pub const MIN_CHECK_MS: f64 = 1_000.0;

/// What has arrived on one open connection, and how much silence it is allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Silence {
    /// The page's `deadAfter` (ms): a fixed allowance, or 0 for none; `None` derives it from
    /// the heartbeats.
    dead_after: Option<f64>,
    /// When anything last arrived.
    last_inbound: f64,
    /// When the server's last heartbeat arrived; 0 before the first.
    last_heartbeat: f64,
    /// The longest gap between two of the server's heartbeats, once two have arrived.
    gap: Option<f64>,
}

impl Silence {
    /// Sets the page's `deadAfter` (ms): a fixed allowance, 0 to never declare the server
    /// dead, `None` (the default) to derive it from the server's heartbeats.
    pub fn dead_after(&mut self, ms: Option<f64>) {
        self.dead_after = ms;
    }

    /// A connection opened at `now`: forget the previous one's heartbeats.
    pub fn opened(&mut self, now: f64) {
        *self = Silence { dead_after: self.dead_after, last_inbound: now, ..Silence::default() };
    }

    /// Something arrived at `now`.
    pub fn inbound(&mut self, now: f64) {
        self.last_inbound = now;
    }

    /// A heartbeat from the server arrived at `now`.
    pub fn heartbeat(&mut self, now: f64) {
        if self.last_heartbeat > 0.0 {
            let gap = now - self.last_heartbeat;
            self.gap = Some(self.gap.map_or(gap, |g| g.max(gap)));
        }
        self.last_heartbeat = now;
        self.last_inbound = now;
    }

    /// How long the connection may stay silent (ms), when that is known.
    pub fn allowance(&self) -> Option<f64> {
        match self.dead_after {
            Some(ms) if ms > 0.0 => Some(ms),
            Some(_) => None,
            None => self.gap.map(|gap| 2.0 * gap + SLACK_MS),
        }
    }

    /// How long to wait before checking again (ms): half the heartbeat gap, or a quarter of
    /// `deadAfter`, and at least [`MIN_CHECK_MS`]; `None` while there is nothing to check.
    ///
    /// A check is late by at most this much, so a dead server is found within the
    /// allowance plus this period. Browsers slow the timers of background tabs down to once
    /// a minute; the page's return to the foreground checks at once.
    pub fn check_every(&self) -> Option<f64> {
        let ms = match self.dead_after {
            Some(ms) if ms > 0.0 => ms / 4.0,
            Some(_) => return None,
            None => self.gap? / 2.0,
        };
        Some(ms.max(MIN_CHECK_MS))
    }

    /// Whether the connection is dead at `now`: the silence so far (ms) once it exceeds the
    /// allowance.
    pub fn dead(&self, now: f64) -> Option<f64> {
        let silent = now - self.last_inbound;
        self.allowance().filter(|&ms| silent > ms).map(|_| silent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened_at(t: f64) -> Silence {
        let mut s = Silence::default();
        s.opened(t);
        s
    }

    #[test]
    fn nothing_is_dead_before_two_heartbeats_show_the_gap() {
        let mut s = opened_at(1_000.0);
        assert_eq!(s.allowance(), None);
        assert_eq!(s.check_every(), None);
        assert_eq!(s.dead(1_000_000.0), None);
        s.heartbeat(21_000.0);
        assert_eq!(s.dead(1_000_000.0), None);
        s.heartbeat(41_000.0);
        assert_eq!(s.allowance(), Some(45_000.0));
    }

    #[test]
    fn dead_after_two_gaps_and_the_slack_of_silence() {
        let mut s = opened_at(0.0);
        s.heartbeat(20_000.0);
        s.heartbeat(40_000.0);
        // 2 × 20 s + 5 s after the last heartbeat, and not a moment before.
        assert_eq!(s.dead(85_000.0), None);
        assert_eq!(s.dead(85_001.0), Some(45_001.0));
        // Half a gap between checks: found within 55 s of the last sign of life.
        assert_eq!(s.check_every(), Some(10_000.0));
    }

    #[test]
    fn any_message_counts_as_a_sign_of_life() {
        let mut s = opened_at(0.0);
        s.heartbeat(500.0);
        s.heartbeat(1_000.0);
        assert_eq!(s.allowance(), Some(6_000.0));
        s.inbound(6_000.0);
        assert_eq!(s.dead(11_000.0), None);
        assert_eq!(s.dead(12_500.0), Some(6_500.0));
    }

    #[test]
    fn the_longest_gap_counts() {
        let mut s = opened_at(0.0);
        s.heartbeat(20_000.0);
        s.heartbeat(40_000.0);
        // Two heartbeats held up and delivered together must not shrink the allowance.
        s.heartbeat(40_010.0);
        assert_eq!(s.allowance(), Some(45_000.0));
    }

    #[test]
    fn checks_are_at_least_a_second_apart() {
        let mut s = opened_at(0.0);
        s.heartbeat(500.0);
        s.heartbeat(1_000.0);
        // A 0.5 s heartbeat: found within 6 s of silence plus one 1 s period.
        assert_eq!(s.check_every(), Some(MIN_CHECK_MS));
    }

    #[test]
    fn dead_after_overrides_the_heartbeats() {
        let mut s = Silence::default();
        s.dead_after(Some(3_000.0));
        s.opened(0.0);
        // Known before any heartbeat.
        assert_eq!(s.allowance(), Some(3_000.0));
        assert_eq!(s.check_every(), Some(MIN_CHECK_MS));
        assert_eq!(s.dead(3_001.0), Some(3_001.0));
        s.heartbeat(10_000.0);
        s.heartbeat(30_000.0);
        assert_eq!(s.allowance(), Some(3_000.0));
        assert_eq!(s.dead(32_000.0), None);

        s.dead_after(Some(60_000.0));
        assert_eq!(s.check_every(), Some(15_000.0));
    }

    #[test]
    fn dead_after_zero_turns_the_check_off() {
        let mut s = Silence::default();
        s.dead_after(Some(0.0));
        s.opened(0.0);
        s.heartbeat(1_000.0);
        s.heartbeat(2_000.0);
        assert_eq!(s.allowance(), None);
        assert_eq!(s.check_every(), None);
        assert_eq!(s.dead(1e12), None);
    }

    #[test]
    fn a_new_connection_forgets_the_old_heartbeats_but_keeps_the_setting() {
        let mut s = opened_at(0.0);
        s.heartbeat(1_000.0);
        s.heartbeat(2_000.0);
        s.opened(100_000.0);
        assert_eq!(s.allowance(), None);
        assert_eq!(s.dead(1e12), None);

        s.dead_after(Some(2_000.0));
        s.opened(200_000.0);
        assert_eq!(s.dead(202_001.0), Some(2_001.0));
    }
}
