//! Dead-peer detection for one connection, free of I/O and clocks.
//!
//! The connection's owner feeds [`Liveness`] what happened (a byte arrived, a probe's answer
//! came back, the handshake finished) with the current time, and asks [`Liveness::poll`] what
//! to do: send a probe, send a heartbeat, or give up on the peer. Between polls it sleeps
//! until [`Liveness::next_deadline`]. Time is a [`Duration`] since any fixed origin, so tests
//! drive it with made-up times and the browser with `Date.now()`.
//!
//! Two designs are combined, each selectable:
//! - libvirt's keepalive: a count of unanswered probes before failing (`max_unacked`), and
//!   "mark active": any inbound traffic proves the peer alive and suppresses the next probe.
//! - Ouroboros' KeepAlive: probes on a fixed cadence, each carrying a cookie its answer must
//!   echo, and a per-probe response timeout.
//!
//! **The rule**: with probing on, a connection is declared dead no later than
//! `interval × (max_unacked + 1)` after the last inbound byte. With `max_unacked = 0` no probe
//! is sent and one idle interval is enough.

use std::time::Duration;
use std::{collections::VecDeque, sync::Arc};

/// The reserved request that probes a peer over transports without pings (TCP). Every peer
/// of ours answers it with its payload, before any handler or limit sees it.
pub const PING_OP: &str = "$ping";

/// The reserved notification a peer sends when it is done: it sends no new requests, and the
/// connection closes once what is in flight is answered.
pub const DONE: &str = "$done";

/// The length of a probe's cookie: 4 bytes naming the connection's series, 4 counting.
pub const COOKIE_LEN: usize = 8;

/// A probe's cookie, echoed by the peer's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cookie(pub [u8; COOKIE_LEN]);

impl Cookie {
    fn new(series: u32, n: u32) -> Self {
        let mut bytes = [0; COOKIE_LEN];
        bytes[..4].copy_from_slice(&series.to_be_bytes());
        bytes[4..].copy_from_slice(&n.to_be_bytes());
        Cookie(bytes)
    }

    fn parts(bytes: &[u8]) -> Option<(u32, u32)> {
        let bytes: [u8; COOKIE_LEN] = bytes.try_into().ok()?;
        let series = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let n = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        Some((series, n))
    }
}

/// How one connection checks that its peer is alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivenessConfig {
    /// The probe period; `None` turns probing (and the rule) off.
    pub interval: Option<Duration>,
    /// Probes that may go unanswered before the peer is declared dead (libvirt's count).
    /// 0 sends no probe: one idle interval closes the connection.
    pub max_unacked: u32,
    /// How long one probe may wait for its answer (Ouroboros); `None`: only the rule applies.
    pub response_timeout: Option<Duration>,
    /// True: inbound traffic proves liveness and puts the next probe off (libvirt's
    /// `mark_active`). False: probes go out on a fixed cadence, as Ouroboros does, and each
    /// must be answered.
    pub activity_suppresses_probes: bool,
    /// Declares the peer dead after this long without an inbound byte, probes or not.
    pub peer_idle_timeout: Option<Duration>,
    /// How long the peer may take to complete the handshake.
    pub handshake_timeout: Duration,
    /// How often to send a heartbeat; `None` sends none.
    pub heartbeat_interval: Option<Duration>,
    /// The load reported in heartbeats (0 idle, 0xffff dying).
    pub heartbeat_load: u16,
}

/// Why a [`LivenessConfig`] cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidLiveness {
    /// A period or timeout of zero would fire continuously.
    #[error("liveness durations must be greater than zero")]
    ZeroDuration,
    /// Probes need an interval to be sent on.
    #[error("max_unacked or response_timeout is set, but interval is none")]
    ProbesWithoutInterval,
    /// With `max_unacked = 0` no probe is sent, so there is nothing to time out.
    #[error("response_timeout is set, but max_unacked = 0 sends no probes")]
    TimeoutWithoutProbes,
    /// A probe that outlives the rule's bound can never time out first.
    #[error("response_timeout exceeds interval × (max_unacked + 1), the rule's own bound")]
    TimeoutBeyondBound,
    /// On a fixed cadence, one probe per interval must be answerable within it.
    #[error("on a fixed cadence, response_timeout must be shorter than interval")]
    TimeoutBeyondCadence,
    /// An idle timeout at or under the interval closes before the first probe could go out.
    #[error("peer_idle_timeout must be longer than interval, or probing is pointless")]
    IdleBeforeProbe,
}

impl LivenessConfig {
    /// The gateway's default: a probe after 15 s of silence, two unanswered probes allowed,
    /// so a dead peer is found within 45 s; nothing at all for 90 s (the core's read
    /// timeout) closes the connection whatever the probes say; heartbeats every 20 s, as Go
    /// and gotalk.js.
    pub fn gateway_default() -> Self {
        LivenessConfig {
            interval: Some(Duration::from_secs(15)),
            max_unacked: 2,
            response_timeout: None,
            activity_suppresses_probes: true,
            peer_idle_timeout: Some(Duration::from_secs(90)),
            handshake_timeout: Duration::from_secs(10),
            heartbeat_interval: Some(Duration::from_secs(20)),
            heartbeat_load: 0,
        }
    }

    /// libvirt's defaults: a probe every 5 s of silence, 5 unanswered allowed (30 s), any
    /// traffic counting as an answer.
    pub fn libvirt() -> Self {
        LivenessConfig {
            interval: Some(Duration::from_secs(5)),
            max_unacked: 5,
            ..Self::gateway_default()
        }
    }

    /// Ouroboros' defaults: a probe every 60 s whatever the traffic, each answered within
    /// 10 s.
    pub fn ouroboros() -> Self {
        LivenessConfig {
            interval: Some(Duration::from_secs(60)),
            max_unacked: 1,
            response_timeout: Some(Duration::from_secs(10)),
            activity_suppresses_probes: false,
            ..Self::gateway_default()
        }
    }

    /// No probes, no idle timeout, no heartbeats: the connection lives until it is closed.
    pub fn disabled() -> Self {
        LivenessConfig {
            interval: None,
            max_unacked: 0,
            response_timeout: None,
            activity_suppresses_probes: true,
            peer_idle_timeout: None,
            handshake_timeout: Duration::from_secs(10),
            heartbeat_interval: None,
            heartbeat_load: 0,
        }
    }

    /// The rule's bound: the longest a dead peer can go undetected, if probing is on.
    pub fn bound(&self) -> Option<Duration> {
        self.interval.map(|i| i.saturating_mul(self.max_unacked.saturating_add(1)))
    }

    /// Checks the settings against each other.
    ///
    /// # Errors
    /// The first contradiction found.
    pub fn validate(&self) -> Result<(), InvalidLiveness> {
        let durations = [
            self.interval,
            self.response_timeout,
            self.peer_idle_timeout,
            self.heartbeat_interval,
            Some(self.handshake_timeout),
        ];
        if durations.iter().flatten().any(Duration::is_zero) {
            return Err(InvalidLiveness::ZeroDuration);
        }
        let Some(interval) = self.interval else {
            if self.max_unacked > 0 || self.response_timeout.is_some() {
                return Err(InvalidLiveness::ProbesWithoutInterval);
            }
            return Ok(());
        };
        if let Some(timeout) = self.response_timeout {
            if self.max_unacked == 0 {
                return Err(InvalidLiveness::TimeoutWithoutProbes);
            }
            if Some(timeout) > self.bound() {
                return Err(InvalidLiveness::TimeoutBeyondBound);
            }
            if !self.activity_suppresses_probes && timeout >= interval {
                return Err(InvalidLiveness::TimeoutBeyondCadence);
            }
        }
        if self.peer_idle_timeout.is_some_and(|idle| idle <= interval) {
            return Err(InvalidLiveness::IdleBeforeProbe);
        }
        Ok(())
    }
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self::gateway_default()
    }
}

/// Why the peer was declared dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Death {
    /// Nothing arrived for `interval × (max_unacked + 1)` (or one interval, with no probes).
    #[error("no answer to {unacked} probes and nothing received for {silent:?}")]
    Unanswered {
        /// Probes outstanding when it was declared.
        unacked: u32,
        /// How long the peer had been silent.
        silent: Duration,
    },
    /// One probe went unanswered for the response timeout.
    #[error("a probe went unanswered for {0:?}")]
    ProbeTimeout(Duration),
    /// Nothing arrived for the peer idle timeout.
    #[error("nothing received for {0:?}")]
    Idle(Duration),
    /// The handshake did not complete in time.
    #[error("no handshake within {0:?}")]
    Handshake(Duration),
}

/// What the owner must do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a probe carrying this cookie: a WebSocket Ping, or the reserved request.
    Probe(Cookie),
    /// Send a heartbeat with this load.
    Heartbeat(u16),
    /// Give up on the peer: send ProtocolError 3 if the socket takes it, close, fail what is
    /// pending. Nothing further happens.
    Dead(Death),
}

/// What an application can observe (and the gateway counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A probe went out.
    ProbeSent(Cookie),
    /// A probe was answered after `rtt`. `verified` is false when the peer answered with an
    /// error (it lacks the probe operation) rather than the cookie: alive, unverified.
    Acked {
        /// The probe's round trip.
        rtt: Duration,
        /// Whether the cookie came back.
        verified: bool,
    },
    /// A probe was due but inbound traffic had already shown the peer alive.
    Suppressed,
    /// The peer was declared dead.
    Dead(Death),
    /// The peer said it is done.
    Done,
}

/// A pong that cannot be trusted: it echoes a cookie this connection never issued while
/// probes wait for their answers. The owner treats it as a protocol error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the peer echoed a cookie that was never sent")]
pub struct WrongCookie;

/// A request arrived after the peer said it was done: a protocol error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a request arrived after the peer announced it was done")]
pub struct AfterDone;

#[derive(Clone, Copy, Debug)]
struct Probe {
    n: u32,
    sent: Duration,
}

/// The liveness state of one connection. See the module documentation.
#[derive(Debug)]
pub struct Liveness {
    /// Shared: many connections use the same settings, and a copy each would be a hundred
    /// bytes per connection.
    config: Arc<LivenessConfig>,
    series: u32,
    next_n: u32,
    started: Duration,
    handshaken: bool,
    last_inbound: Duration,
    /// The last point of the probe cadence, whether a probe went out then or was suppressed.
    last_probe: Duration,
    unacked: VecDeque<Probe>,
    last_heartbeat: Duration,
    rtt: Option<Duration>,
    peer_done: bool,
    dead: Option<Death>,
    events: Vec<Event>,
}

impl Liveness {
    /// A connection starting at `now`. `series` tells this connection's cookies apart from
    /// any other's (a random number is best).
    pub fn new(config: impl Into<Arc<LivenessConfig>>, series: u32, now: Duration) -> Self {
        Liveness {
            config: config.into(),
            series,
            next_n: 0,
            started: now,
            handshaken: false,
            last_inbound: now,
            last_probe: now,
            unacked: VecDeque::new(),
            last_heartbeat: now,
            rtt: None,
            peer_done: false,
            dead: None,
            events: Vec::new(),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &LivenessConfig {
        &self.config
    }

    /// The last measured probe round trip.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Why the peer was declared dead, once it was.
    pub fn death(&self) -> Option<Death> {
        self.dead
    }

    /// Probes waiting for their answer (with `activity_suppresses_probes`, traffic since a
    /// probe answers it).
    pub fn unacked(&self) -> u32 {
        self.unacked.iter().filter(|p| self.waiting(p)).count() as u32
    }

    fn waiting(&self, probe: &Probe) -> bool {
        !self.config.activity_suppresses_probes || probe.sent >= self.last_inbound
    }

    /// The oldest probe still waiting for its answer.
    fn oldest_waiting(&self) -> Option<&Probe> {
        self.unacked.iter().find(|p| self.waiting(p))
    }

    /// Takes the events since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The handshake completed at `now`.
    pub fn handshake(&mut self, now: Duration) {
        self.handshaken = true;
        self.inbound(now);
    }

    /// Bytes arrived at `now`: any byte, even part of a large message.
    ///
    /// With `activity_suppresses_probes`, traffic answers the probes sent before it; they
    /// stay matchable until the next probe is due, so a pong read right after still records
    /// its round trip.
    pub fn inbound(&mut self, now: Duration) {
        self.last_inbound = self.last_inbound.max(now);
    }

    /// A probe's answer arrived at `now` carrying `echo`.
    ///
    /// # Errors
    /// [`WrongCookie`] when probes are outstanding and `echo` is none this connection ever
    /// issued. A stale pong (for a probe already answered or given up) or an unsolicited
    /// one (nothing outstanding) is ignored.
    pub fn pong(&mut self, now: Duration, echo: &[u8]) -> Result<(), WrongCookie> {
        self.inbound(now);
        let issued = match Cookie::parts(echo) {
            Some((series, n)) if series == self.series && n < self.next_n => Some(n),
            _ => None,
        };
        match issued {
            Some(n) => {
                if let Some(at) = self.unacked.iter().position(|p| p.n == n) {
                    let probe = self.unacked[at];
                    // Answers arrive in order; older probes are answered by this one too.
                    self.unacked.drain(..=at);
                    self.acked(now, probe, true);
                }
                Ok(())
            }
            None if self.unacked.is_empty() => Ok(()),
            None => Err(WrongCookie),
        }
    }

    /// The peer answered the probe `cookie` with an error (it lacks the probe operation): it
    /// is alive, though the cookie is unverified.
    pub fn probe_refused(&mut self, now: Duration, cookie: Cookie) {
        self.inbound(now);
        let Some((_, n)) = Cookie::parts(&cookie.0) else { return };
        if let Some(at) = self.unacked.iter().position(|p| p.n == n) {
            let probe = self.unacked[at];
            self.unacked.drain(..=at);
            self.acked(now, probe, false);
        }
    }

    /// The probe `cookie` was not sent: the peer has no way to answer one that its
    /// application would not see (over TCP, a peer that does not know the reserved request).
    /// It is forgotten as if never issued; the rule still bounds the peer's silence, so such a
    /// peer stays alive only by its own traffic and heartbeats.
    pub fn withhold(&mut self, cookie: Cookie) {
        let Some((_, n)) = Cookie::parts(&cookie.0) else { return };
        self.unacked.retain(|p| p.n != n);
        self.events.retain(|e| *e != Event::ProbeSent(cookie));
    }

    /// The peer said it is done (the reserved notification).
    pub fn peer_done(&mut self) {
        if !self.peer_done {
            self.peer_done = true;
            self.events.push(Event::Done);
        }
    }

    /// A request arrived from the peer.
    ///
    /// # Errors
    /// [`AfterDone`] once the peer has said it is done.
    pub fn request(&self) -> Result<(), AfterDone> {
        if self.peer_done {
            Err(AfterDone)
        } else {
            Ok(())
        }
    }

    /// What to do at `now`. Call until it returns `None`, then sleep until
    /// [`next_deadline`](Self::next_deadline).
    pub fn poll(&mut self, now: Duration) -> Option<Action> {
        if self.dead.is_some() {
            return None;
        }
        if let Some(death) = self.death_at(now) {
            self.dead = Some(death);
            self.events.push(Event::Dead(death));
            return Some(Action::Dead(death));
        }
        if let Some(action) = self.probe_due(now) {
            return Some(action);
        }
        if let Some(every) = self.config.heartbeat_interval {
            if now >= self.last_heartbeat + every {
                self.last_heartbeat = now;
                return Some(Action::Heartbeat(self.config.heartbeat_load));
            }
        }
        None
    }

    /// When `poll` next has something to do, if ever.
    pub fn next_deadline(&self) -> Option<Duration> {
        if self.dead.is_some() {
            return None;
        }
        let c = &self.config;
        // On the stack: a connection's write loop asks before every wait, so once per
        // request on a connection with one in flight.
        let probing = c.interval.map(|interval| {
            let unanswered = self.last_inbound + interval.saturating_mul(c.max_unacked + 1);
            let probe = (c.max_unacked > 0).then(|| self.next_probe_at(interval));
            (unanswered, probe)
        });
        let oldest = self.oldest_waiting();
        [
            (!self.handshaken).then(|| self.started + c.handshake_timeout),
            c.peer_idle_timeout.map(|idle| self.last_inbound + idle),
            probing.map(|(unanswered, _)| unanswered),
            probing.and_then(|(_, probe)| probe),
            c.response_timeout.zip(oldest).map(|(timeout, oldest)| oldest.sent + timeout),
            c.heartbeat_interval.map(|every| self.last_heartbeat + every),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn acked(&mut self, now: Duration, probe: Probe, verified: bool) {
        let rtt = now.saturating_sub(probe.sent);
        if verified {
            self.rtt = Some(rtt);
        }
        self.events.push(Event::Acked { rtt, verified });
    }

    /// Probes go out on a cadence: an interval after the last one (or after the start).
    fn next_probe_at(&self, interval: Duration) -> Duration {
        self.last_probe + interval
    }

    fn death_at(&self, now: Duration) -> Option<Death> {
        let c = &self.config;
        if !self.handshaken && now >= self.started + c.handshake_timeout {
            return Some(Death::Handshake(c.handshake_timeout));
        }
        let silent = now.saturating_sub(self.last_inbound);
        if let Some(idle) = c.peer_idle_timeout {
            if silent >= idle {
                return Some(Death::Idle(idle));
            }
        }
        if let (Some(timeout), Some(oldest)) = (c.response_timeout, self.oldest_waiting()) {
            if now >= oldest.sent + timeout {
                return Some(Death::ProbeTimeout(timeout));
            }
        }
        let bound = c.bound()?;
        (silent >= bound).then_some(Death::Unanswered { unacked: self.unacked(), silent })
    }

    fn probe_due(&mut self, now: Duration) -> Option<Action> {
        let interval = self.config.interval?;
        if self.config.max_unacked == 0 || now < self.next_probe_at(interval) {
            return None;
        }
        // The cadence ticks either way, so the next probe is an interval after this point.
        self.last_probe = now;
        if self.config.activity_suppresses_probes
            && now.saturating_sub(self.last_inbound) < interval
        {
            // libvirt's mark_active: traffic within the last interval already proved it.
            self.events.push(Event::Suppressed);
            return None;
        }
        if self.config.activity_suppresses_probes {
            // Probes that traffic has answered since are done with.
            let last_inbound = self.last_inbound;
            self.unacked.retain(|p| p.sent >= last_inbound);
        }
        if self.unacked() >= self.config.max_unacked {
            // More probes could not be answered before the rule's deadline.
            return None;
        }
        let n = self.next_n;
        self.next_n = self.next_n.wrapping_add(1);
        self.unacked.push_back(Probe { n, sent: now });
        let cookie = Cookie::new(self.series, n);
        self.events.push(Event::ProbeSent(cookie));
        Some(Action::Probe(cookie))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// A config with only probing on (no heartbeats, no idle timeout), handshake done at 0.
    fn probing(interval: u64, max_unacked: u32, suppress: bool) -> Liveness {
        let config = LivenessConfig {
            interval: Some(s(interval)),
            max_unacked,
            activity_suppresses_probes: suppress,
            peer_idle_timeout: None,
            heartbeat_interval: None,
            ..LivenessConfig::gateway_default()
        };
        assert_eq!(config.validate(), Ok(()));
        let mut l = Liveness::new(config, 7, s(0));
        l.handshake(s(0));
        l
    }

    /// Steps from deadline to deadline until `until`, calling `on_time` before each poll,
    /// and returns every action with its time.
    fn run(
        l: &mut Liveness,
        until: Duration,
        mut on_time: impl FnMut(&mut Liveness, Duration),
    ) -> Vec<(Duration, Action)> {
        let mut actions = vec![];
        while let Some(at) = l.next_deadline() {
            if at > until {
                break;
            }
            on_time(l, at);
            while let Some(action) = l.poll(at) {
                actions.push((at, action));
            }
        }
        actions
    }

    /// Visits every whole second up to `until`, calling `on_second` and then polling.
    fn tick(
        l: &mut Liveness,
        until: u64,
        mut on_second: impl FnMut(&mut Liveness, Duration),
    ) -> Vec<(Duration, Action)> {
        let mut actions = vec![];
        for t in 1..=until {
            on_second(l, s(t));
            while let Some(action) = l.poll(s(t)) {
                actions.push((s(t), action));
            }
        }
        actions
    }

    fn probes(actions: &[(Duration, Action)]) -> Vec<Duration> {
        actions.iter().filter(|(_, a)| matches!(a, Action::Probe(_))).map(|(t, _)| *t).collect()
    }

    fn death(actions: &[(Duration, Action)]) -> Option<(Duration, Death)> {
        actions.iter().find_map(|(t, a)| match a {
            Action::Dead(d) => Some((*t, *d)),
            _ => None,
        })
    }

    #[test]
    fn a_silent_peer_is_dead_at_exactly_the_bound() {
        let mut l = probing(15, 2, true);
        let actions = run(&mut l, s(600), |_, _| {});
        assert_eq!(probes(&actions), [s(15), s(30)]);
        assert_eq!(death(&actions), Some((s(45), Death::Unanswered { unacked: 2, silent: s(45) })));
        assert_eq!(l.next_deadline(), None);
        assert_eq!(l.poll(s(1000)), None, "nothing after death");
    }

    #[test]
    fn the_bound_holds_from_the_last_inbound_byte_in_both_modes() {
        for suppress in [true, false] {
            for max_unacked in 0..4 {
                for last in [0u64, 1, 7, 14, 15, 16, 29, 44] {
                    let mut l = probing(15, max_unacked, suppress);
                    // Traffic every second until `last`, then silence.
                    let mut t = 0;
                    while t < last {
                        t += 1;
                        l.inbound(s(t));
                        while l.poll(s(t)).is_some() {}
                    }
                    let actions = run(&mut l, s(1000), |_, _| {});
                    let (at, _) = death(&actions).expect("declared dead");
                    let bound = s(last) + s(15) * (max_unacked + 1);
                    assert_eq!(at, bound, "suppress {suppress}, max {max_unacked}, last {last}");
                }
            }
        }
    }

    #[test]
    fn any_inbound_byte_puts_death_off() {
        let mut l = probing(10, 1, true);
        // A large message trickling in: a byte every 9 s is activity each time.
        let actions = tick(&mut l, 90, |l, t| {
            if t.as_secs() % 9 == 0 {
                l.inbound(t);
            }
        });
        assert_eq!(death(&actions), None);
        assert!(probes(&actions).is_empty());
    }

    #[test]
    fn max_unacked_zero_closes_after_one_idle_interval_without_probing() {
        let mut l = probing(20, 0, true);
        let actions = run(&mut l, s(600), |_, _| {});
        assert!(probes(&actions).is_empty());
        assert_eq!(death(&actions), Some((s(20), Death::Unanswered { unacked: 0, silent: s(20) })));
    }

    #[test]
    fn activity_suppresses_probes_but_a_fixed_cadence_probes_anyway() {
        // Traffic every 5 s for a minute, probes answered at once.
        let traffic = |l: &mut Liveness, t: Duration| {
            if t.as_secs() % 5 == 0 {
                l.inbound(t);
            }
        };
        let mut libvirt = probing(15, 2, true);
        let actions = tick(&mut libvirt, 60, traffic);
        assert!(probes(&actions).is_empty(), "{actions:?}");
        let events = libvirt.take_events();
        assert_eq!(events.iter().filter(|e| **e == Event::Suppressed).count(), 4);

        let mut cadence = probing(15, 2, false);
        let mut answer = None;
        let actions = tick(&mut cadence, 60, |l, t| {
            traffic(l, t);
            // The peer answers each probe a second later.
            if let Some(cookie) = answer.take() {
                l.pong(t, &Cookie::new(7, cookie).0).unwrap();
            }
            if t.as_secs() % 15 == 0 {
                answer = Some((t.as_secs() / 15 - 1) as u32);
            }
        });
        assert_eq!(probes(&actions), [s(15), s(30), s(45), s(60)]);
    }

    #[test]
    fn a_probe_unanswered_past_its_response_timeout_is_death() {
        let mut l = Liveness::new(
            LivenessConfig { heartbeat_interval: None, ..LivenessConfig::ouroboros() },
            1,
            s(0),
        );
        l.handshake(s(0));
        // Traffic keeps flowing, but on a fixed cadence the probe itself must be answered.
        let actions = run(&mut l, s(600), |l, t| l.inbound(t));
        assert_eq!(probes(&actions), [s(60)]);
        assert_eq!(death(&actions), Some((s(70), Death::ProbeTimeout(s(10)))));
    }

    #[test]
    fn answers_record_the_round_trip_and_stale_or_unsolicited_pongs_are_ignored() {
        let mut l = probing(15, 2, false);
        assert_eq!(l.poll(s(15)), Some(Action::Probe(Cookie::new(7, 0))));
        l.take_events();
        // Unknown bytes, but a probe waits: a wrong echo.
        assert_eq!(l.pong(s(15), b"12345678"), Err(WrongCookie));
        assert_eq!(l.pong(s(15), b"short"), Err(WrongCookie));
        // The right one, 250 ms later.
        l.pong(s(15) + ms(250), &Cookie::new(7, 0).0).unwrap();
        assert_eq!(l.rtt(), Some(ms(250)));
        assert_eq!(l.take_events(), [Event::Acked { rtt: ms(250), verified: true }]);
        // The same echo again is stale; with nothing outstanding, anything is unsolicited.
        assert_eq!(l.pong(s(16), &Cookie::new(7, 0).0), Ok(()));
        assert_eq!(l.pong(s(16), b"12345678"), Ok(()));
        assert!(l.take_events().is_empty());
    }

    #[test]
    fn with_suppression_the_pong_read_after_its_bytes_still_records_the_round_trip() {
        let mut l = probing(15, 2, true);
        let Some(Action::Probe(cookie)) = l.poll(s(15)) else { panic!("a probe") };
        // The read loop counts the pong's bytes as activity before it matches the pong.
        l.inbound(s(15) + ms(30));
        assert_eq!(l.unacked(), 0, "traffic answers it");
        l.pong(s(15) + ms(30), &cookie.0).unwrap();
        assert_eq!(l.rtt(), Some(ms(30)));
    }

    #[test]
    fn an_answer_acknowledges_the_probes_before_it() {
        let mut l = probing(10, 3, false);
        let _ = l.poll(s(10));
        let _ = l.poll(s(20));
        assert_eq!(l.unacked(), 2);
        l.pong(s(21), &Cookie::new(7, 1).0).unwrap();
        assert_eq!(l.unacked(), 0);
        // A late answer to the first is now stale.
        assert_eq!(l.pong(s(22), &Cookie::new(7, 0).0), Ok(()));
    }

    #[test]
    fn a_peer_without_the_probe_op_is_alive_but_unverified() {
        let mut l = probing(15, 1, false);
        let Some(Action::Probe(cookie)) = l.poll(s(15)) else { panic!("a probe") };
        l.take_events();
        l.probe_refused(s(15) + ms(40), cookie);
        assert_eq!(l.unacked(), 0);
        assert_eq!(l.rtt(), None);
        assert_eq!(l.take_events(), [Event::Acked { rtt: ms(40), verified: false }]);
    }

    #[test]
    fn withheld_probes_are_forgotten_and_the_rule_still_bounds_the_silence() {
        let mut l = probing(15, 2, true);
        let (mut withheld, mut deaths) = (vec![], vec![]);
        for t in 1..=600 {
            while let Some(action) = l.poll(s(t)) {
                match action {
                    Action::Probe(cookie) => {
                        withheld.push(s(t));
                        l.withhold(cookie);
                        assert_eq!(l.unacked(), 0);
                        assert_eq!(l.take_events(), [], "no ProbeSent for a probe not sent");
                    }
                    Action::Dead(death) => deaths.push((s(t), death)),
                    Action::Heartbeat(_) => {}
                }
            }
        }
        assert_eq!(withheld, [s(15), s(30)]);
        // The same moment as a silent peer whose probes went out (the test above).
        assert_eq!(deaths, [(s(45), Death::Unanswered { unacked: 0, silent: s(45) })]);
    }

    #[test]
    fn done_then_a_request_is_a_protocol_error() {
        let mut l = probing(15, 2, true);
        assert_eq!(l.request(), Ok(()));
        l.peer_done();
        l.peer_done();
        assert_eq!(l.take_events(), [Event::Done]);
        assert_eq!(l.request(), Err(AfterDone));
    }

    #[test]
    fn handshake_and_idle_timeouts() {
        let config = LivenessConfig { heartbeat_interval: None, ..LivenessConfig::disabled() };
        let mut l = Liveness::new(config, 0, s(100));
        assert_eq!(l.next_deadline(), Some(s(110)));
        assert_eq!(l.poll(s(110)), Some(Action::Dead(Death::Handshake(s(10)))));

        let config = LivenessConfig { peer_idle_timeout: Some(s(30)), ..config };
        let mut l = Liveness::new(config, 0, s(0));
        l.handshake(s(1));
        l.inbound(s(20));
        assert_eq!(l.next_deadline(), Some(s(50)));
        assert_eq!(l.poll(s(49)), None);
        assert_eq!(l.poll(s(50)), Some(Action::Dead(Death::Idle(s(30)))));
    }

    #[test]
    fn heartbeats_go_out_on_their_interval_with_the_configured_load() {
        let config = LivenessConfig {
            heartbeat_interval: Some(s(20)),
            heartbeat_load: 9,
            ..LivenessConfig::disabled()
        };
        let mut l = Liveness::new(config, 0, s(0));
        l.handshake(s(0));
        let actions = run(&mut l, s(65), |_, _| {});
        assert_eq!(
            actions,
            [
                (s(20), Action::Heartbeat(9)),
                (s(40), Action::Heartbeat(9)),
                (s(60), Action::Heartbeat(9))
            ]
        );
    }

    #[test]
    fn presets_are_valid_and_validation_rejects_each_contradiction() {
        for preset in [
            LivenessConfig::gateway_default(),
            LivenessConfig::libvirt(),
            LivenessConfig::ouroboros(),
            LivenessConfig::disabled(),
        ] {
            assert_eq!(preset.validate(), Ok(()), "{preset:?}");
        }
        assert_eq!(LivenessConfig::gateway_default().bound(), Some(s(45)));
        assert_eq!(LivenessConfig::libvirt().bound(), Some(s(30)));
        assert_eq!(LivenessConfig::disabled().bound(), None);

        let d = LivenessConfig::gateway_default();
        let bad = [
            (LivenessConfig { interval: Some(s(0)), ..d }, InvalidLiveness::ZeroDuration),
            (LivenessConfig { interval: None, ..d }, InvalidLiveness::ProbesWithoutInterval),
            (
                LivenessConfig { max_unacked: 0, response_timeout: Some(s(5)), ..d },
                InvalidLiveness::TimeoutWithoutProbes,
            ),
            (
                LivenessConfig { response_timeout: Some(s(46)), ..d },
                InvalidLiveness::TimeoutBeyondBound,
            ),
            (
                LivenessConfig {
                    activity_suppresses_probes: false,
                    response_timeout: Some(s(15)),
                    ..d
                },
                InvalidLiveness::TimeoutBeyondCadence,
            ),
            (
                LivenessConfig { peer_idle_timeout: Some(s(15)), ..d },
                InvalidLiveness::IdleBeforeProbe,
            ),
        ];
        for (config, want) in bad {
            assert_eq!(config.validate(), Err(want), "{config:?}");
        }
    }
}
