//! When to reconnect: the keepalive state machine, free of I/O and clocks.
//!
//! A client feeds it what happened (opened, closed, and in a browser: came online, became
//! visible) with the current time and a random number, and it answers with what to do next.
//! The browser client and the Rust keepalive client (`gotalk::keepalive`, which is always
//! "online") both use it, so they reconnect by the same rules. Tests drive it with made-up
//! times.

use crate::backoff::Backoff;

/// The longest wait after the browser comes back online.
const ONLINE_SPREAD_MS: f64 = 1000.0;

/// Where a keepalive connection stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Phase {
    /// A connection is being opened.
    Connecting,
    /// The connection is open.
    Open,
    /// Waiting to try again at the given time (ms).
    Waiting(f64),
    /// The browser is offline; waiting for its `online` event.
    Offline,
    /// The server refused the client for who it is (close code 4401 or 4403); waiting for
    /// [`resume`](KeepAlive::resume), after a login say.
    Refused,
    /// `end()` was called; nothing more happens.
    Ended,
}

impl Phase {
    /// The name a page sees in `sock.state`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::Open => "open",
            Phase::Waiting(_) => "reconnecting",
            Phase::Offline => "offline",
            Phase::Refused => "refused",
            Phase::Ended => "closed",
        }
    }
}

/// How a connection ended, as far as reconnecting cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The server said it is going away (WebSocket close code 1001): a restart or deploy.
    GoingAway,
    /// The server refused the client for who it is (unauthorized, forbidden): trying again
    /// cannot help until the client changes that.
    Refused,
    /// Anything else: busy, dropped, timed out, a protocol error.
    Other,
}

/// True for the close codes that refuse a client for who it is: 4401 (unauthorized) and
/// 4403 (forbidden), 4000 + the HTTP status, as a gotalk-rs server sends them.
pub fn refuses_client(code: u16) -> bool {
    matches!(code, 4401 | 4403)
}

/// What the caller should do now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Next {
    /// Open a new connection at this time (ms); schedule a timer for it.
    ConnectAt(f64),
    /// Wait for the browser's `online` event.
    WaitOnline,
    /// Nothing.
    Nothing,
}

/// The reconnect state of one keepalive sock.
#[derive(Debug)]
pub struct KeepAlive {
    backoff: Backoff,
    phase: Phase,
    /// Failed attempts since the last stable connection; indexes the backoff curve.
    attempt: u32,
    /// When the current connection opened.
    opened_at: f64,
    /// How long to wait after a [`Closed::Refused`]; `None` waits for `resume`.
    refused_wait: Option<f64>,
}

impl KeepAlive {
    /// A keepalive that is about to make its first attempt.
    pub fn new(backoff: Backoff) -> Self {
        KeepAlive {
            backoff,
            phase: Phase::Connecting,
            attempt: 0,
            opened_at: 0.0,
            refused_wait: None,
        }
    }

    /// What to do after a refusal ([`Closed::Refused`]): `None` (the default) stops until
    /// [`resume`](Self::resume), since a client refused for who it is would be refused again;
    /// `Some(ms)` tries again after that long, every time (a page that logs in elsewhere,
    /// in another tab, and has no way to call `resume`).
    pub fn refused_wait(&mut self, wait: Option<f64>) {
        self.refused_wait = wait;
    }

    /// The schedule in use.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When the next attempt is due (ms), while waiting for one.
    pub fn next_attempt_at(&self) -> Option<f64> {
        match self.phase {
            Phase::Waiting(at) => Some(at),
            _ => None,
        }
    }

    /// An attempt has started.
    pub fn connecting(&mut self) {
        if self.phase != Phase::Ended {
            self.phase = Phase::Connecting;
        }
    }

    /// The connection opened at `now`.
    pub fn opened(&mut self, now: f64) {
        if self.phase != Phase::Ended {
            self.phase = Phase::Open;
            self.opened_at = now;
        }
    }

    /// The connection (or the attempt) ended at `now`. `online` is `navigator.onLine` in a
    /// browser (always true elsewhere); `r` is uniform in `[0, 1)`.
    ///
    /// The backoff starts over after a connection that stayed open for at least the
    /// schedule's minimum delay. One that the server closes sooner than that counts as a
    /// failed attempt, so a server that accepts and drops at once is not hammered.
    pub fn closed(&mut self, how: Closed, now: f64, online: bool, r: f64) -> Next {
        match self.phase {
            Phase::Ended => return Next::Nothing,
            Phase::Open if now - self.opened_at >= self.backoff.min_ms => self.attempt = 0,
            _ => {}
        }
        if !online {
            self.phase = Phase::Offline;
            return Next::WaitOnline;
        }
        let delay = match how {
            Closed::Refused => match self.refused_wait {
                None => {
                    self.phase = Phase::Refused;
                    return Next::Nothing;
                }
                Some(wait) => wait.max(0.0),
            },
            Closed::GoingAway => {
                // The server is restarting; its next failure should wait the second step.
                self.attempt = 1;
                self.backoff.going_away_delay(r)
            }
            Closed::Other => {
                let delay = self.backoff.delay(self.attempt, r);
                self.attempt = self.attempt.saturating_add(1);
                delay
            }
        };
        let at = now + delay;
        self.phase = Phase::Waiting(at);
        Next::ConnectAt(at)
    }

    /// The browser came back online at `now`.
    ///
    /// The network is back, so the wait is short whatever the schedule: drawn from
    /// `[0, min(min, 1 s))`, enough to keep a whole office returning from an outage apart.
    pub fn online(&mut self, now: f64, r: f64) -> Next {
        match self.phase {
            Phase::Offline | Phase::Waiting(_) => {
                self.attempt = 0;
                let at = now + self.backoff.min_ms.min(ONLINE_SPREAD_MS) * r.clamp(0.0, 1.0);
                self.phase = Phase::Waiting(at);
                Next::ConnectAt(at)
            }
            _ => Next::Nothing,
        }
    }

    /// The browser went offline.
    ///
    /// A pending reconnect is dropped: it would fail, and one that fails while the browser
    /// is offline ends in [`Phase::Offline`] anyway, but only after its wait, which may be a
    /// minute. The `offline` event may also come after the close it caused (the close can
    /// be seen while `navigator.onLine` is still true), so this is where such a close is
    /// parked. An open or connecting connection is left alone: its own close tells.
    pub fn offline(&mut self) -> Next {
        match self.phase {
            Phase::Waiting(_) => {
                self.phase = Phase::Offline;
                Next::WaitOnline
            }
            _ => Next::Nothing,
        }
    }

    /// The tab became visible at `now`.
    ///
    /// Browsers slow the timers of background tabs down to one a minute or less, so a
    /// pending reconnect may be long overdue: try now. An open connection is checked by the
    /// caller.
    pub fn visible(&mut self, now: f64) -> Next {
        match self.phase {
            Phase::Waiting(at) if at > now => {
                self.phase = Phase::Waiting(now);
                Next::ConnectAt(now)
            }
            Phase::Waiting(at) => Next::ConnectAt(at),
            _ => Next::Nothing,
        }
    }

    /// Tries again at `now`, from the start of the schedule: after a refusal (the client has
    /// logged in since), or to cut a pending wait short. Nothing while open or connecting.
    pub fn resume(&mut self, now: f64) -> Next {
        match self.phase {
            Phase::Refused | Phase::Waiting(_) | Phase::Offline => {
                self.attempt = 0;
                self.phase = Phase::Waiting(now);
                Next::ConnectAt(now)
            }
            _ => Next::Nothing,
        }
    }

    /// The client was ended (a page's `end()`, a Rust client's `close()`).
    pub fn end(&mut self) {
        self.phase = Phase::Ended;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ka() -> KeepAlive {
        KeepAlive::new(Backoff { jitter: 0.0, ..Backoff::default() })
    }

    fn at(next: Next) -> f64 {
        match next {
            Next::ConnectAt(t) => t,
            other => panic!("expected a reconnect, got {other:?}"),
        }
    }

    #[test]
    fn a_refusal_stops_until_resumed_or_waits_as_long_as_asked() {
        let mut k = ka();
        k.opened(0.0);
        assert_eq!(k.closed(Closed::Refused, 10.0, true, 0.5), Next::Nothing);
        assert_eq!((k.phase(), k.phase().name()), (Phase::Refused, "refused"));
        // Coming online or into view does not bring it back; only resume does.
        assert_eq!(k.online(20.0, 0.5), Next::Nothing);
        assert_eq!(k.visible(30.0), Next::Nothing);
        assert_eq!(k.resume(40.0), Next::ConnectAt(40.0));
        assert_eq!(k.phase(), Phase::Waiting(40.0));

        let mut k = ka();
        k.refused_wait(Some(60_000.0));
        k.connecting();
        assert_eq!(at(k.closed(Closed::Refused, 0.0, true, 0.5)), 60_000.0);
        assert_eq!(at(k.closed(Closed::Refused, 60_000.0, true, 0.5)), 120_000.0);
        assert!(refuses_client(4401) && refuses_client(4403));
        assert!(!refuses_client(4429) && !refuses_client(1008) && !refuses_client(4003));
    }

    #[test]
    fn failed_attempts_climb_the_curve_to_max() {
        let mut k = ka();
        let mut now = 0.0;
        let mut waits = vec![];
        for _ in 0..6 {
            let t = at(k.closed(Closed::Other, now, true, 0.0));
            assert_eq!(k.phase(), Phase::Waiting(t));
            assert_eq!(k.next_attempt_at(), Some(t));
            waits.push(t - now);
            now = t;
            k.connecting();
            assert_eq!(k.phase().name(), "connecting");
        }
        assert_eq!(waits, [500.0, 1000.0, 2000.0, 4000.0, 5000.0, 5000.0]);
    }

    #[test]
    fn a_stable_connection_resets_the_backoff() {
        let mut k = ka();
        for _ in 0..4 {
            k.closed(Closed::Other, 0.0, true, 0.0);
        }
        k.opened(10_000.0);
        assert_eq!(k.phase().name(), "open");
        // Open for 600 ms, longer than min: the next wait is the first step again.
        assert_eq!(at(k.closed(Closed::Other, 10_600.0, true, 0.0)), 11_100.0);
    }

    #[test]
    fn a_connection_dropped_at_once_keeps_climbing() {
        let mut k = ka();
        k.closed(Closed::Other, 0.0, true, 0.0); // 500
        k.closed(Closed::Other, 0.0, true, 0.0); // 1000
        k.opened(5_000.0);
        // Closed 100 ms after opening: counts as a failure, so the third step (2000 ms).
        assert_eq!(at(k.closed(Closed::Other, 5_100.0, true, 0.0)), 7_100.0);
    }

    #[test]
    fn going_away_reconnects_soon_then_continues_from_the_second_step() {
        let mut k = KeepAlive::new(Backoff::default());
        k.opened(0.0);
        let t = at(k.closed(Closed::GoingAway, 60_000.0, true, 0.5));
        assert_eq!(t, 60_500.0);
        // The server is not back yet: the next failure waits the second step, jittered.
        let t2 = at(k.closed(Closed::Other, t, true, 0.0));
        assert_eq!(t2 - t, 1000.0);
    }

    #[test]
    fn offline_waits_for_online_then_reconnects_soon() {
        let mut k = ka();
        k.opened(0.0);
        assert_eq!(k.closed(Closed::Other, 1000.0, false, 0.0), Next::WaitOnline);
        assert_eq!(k.phase().name(), "offline");
        assert_eq!(k.next_attempt_at(), None);
        assert_eq!(at(k.online(9_000.0, 0.25)), 9_125.0);
        // A second online event while already scheduled reschedules, harmlessly.
        assert_eq!(at(k.online(9_100.0, 0.0)), 9_100.0);
    }

    #[test]
    fn online_waits_under_a_second_even_with_a_slow_schedule() {
        let mut k =
            KeepAlive::new(Backoff { min_ms: 20_000.0, max_ms: 60_000.0, ..Backoff::default() });
        k.opened(0.0);
        assert_eq!(k.closed(Closed::Other, 30_000.0, false, 0.0), Next::WaitOnline);
        assert_eq!(at(k.online(40_000.0, 0.999)), 40_999.0);
    }

    #[test]
    fn going_offline_while_waiting_drops_the_attempt_until_online() {
        let mut k =
            KeepAlive::new(Backoff { min_ms: 20_000.0, max_ms: 60_000.0, ..Backoff::default() });
        k.opened(0.0);
        // The close was seen while navigator.onLine still said true.
        assert!(matches!(k.closed(Closed::Other, 30_000.0, true, 0.5), Next::ConnectAt(_)));
        assert_eq!(k.offline(), Next::WaitOnline);
        assert_eq!(k.phase().name(), "offline");
        assert_eq!(k.next_attempt_at(), None);
        assert_eq!(k.offline(), Next::Nothing);
        assert_eq!(at(k.online(31_000.0, 0.5)), 31_500.0);
    }

    #[test]
    fn going_offline_while_open_connecting_refused_or_ended_does_nothing() {
        let mut k = ka();
        assert_eq!(k.offline(), Next::Nothing);
        assert_eq!(k.phase().name(), "connecting");
        k.opened(0.0);
        assert_eq!(k.offline(), Next::Nothing);
        assert_eq!(k.phase().name(), "open");
        k.closed(Closed::Refused, 10.0, true, 0.0);
        assert_eq!(k.offline(), Next::Nothing);
        assert_eq!(k.phase().name(), "refused");
        k.end();
        assert_eq!(k.offline(), Next::Nothing);
        assert_eq!(k.phase().name(), "closed");
    }

    #[test]
    fn online_while_open_or_connecting_does_nothing() {
        let mut k = ka();
        assert_eq!(k.online(0.0, 0.5), Next::Nothing);
        k.opened(0.0);
        assert_eq!(k.online(1.0, 0.5), Next::Nothing);
    }

    #[test]
    fn becoming_visible_brings_an_overdue_or_distant_attempt_forward() {
        let mut k = ka();
        for _ in 0..5 {
            k.closed(Closed::Other, 0.0, true, 0.0);
        }
        assert_eq!(k.next_attempt_at(), Some(5000.0));
        assert_eq!(k.visible(1000.0), Next::ConnectAt(1000.0));
        assert_eq!(k.next_attempt_at(), Some(1000.0));
        k.opened(1200.0);
        assert_eq!(k.visible(2000.0), Next::Nothing);
    }

    #[test]
    fn nothing_happens_after_end() {
        let mut k = ka();
        k.opened(0.0);
        k.end();
        assert_eq!(k.closed(Closed::Other, 10.0, true, 0.0), Next::Nothing);
        assert_eq!(k.online(20.0, 0.0), Next::Nothing);
        assert_eq!(k.visible(30.0), Next::Nothing);
        k.opened(40.0);
        k.connecting();
        assert_eq!(k.phase().name(), "closed");
    }
}
