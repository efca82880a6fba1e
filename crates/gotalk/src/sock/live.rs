//! Liveness for one connection: drives `gotalk_protocol::liveness` (probes, heartbeats,
//! dead-peer detection) from the read and write loops, answers the reserved messages, and
//! learns whether the peer understands them (`gotalk_protocol::reserved`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gotalk_protocol::liveness::{Action, Cookie, Event, Liveness, LivenessConfig};
use gotalk_protocol::{Frame, ProtocolErrorCode};
use rand::Rng;
use tokio::time::Instant;

use super::{lock, unix_time, Sock};
use crate::config::Config;
use crate::error::{CloseReason, Error};
use crate::handlers::Handlers;
use crate::metrics::LivenessCounters;
use crate::transport::FrameWriter;

pub(crate) use gotalk_protocol::liveness::{DONE, PING_OP};

/// True for a message only a peer of ours sends: the hello, or a reserved request or
/// notification, this module's or one an extension claims.
pub(super) fn from_our_peer(frame: &Frame, handlers: &Handlers) -> bool {
    match frame {
        Frame::SingleRequest { op, .. } => {
            op.as_str() == PING_OP || handlers.extensions.reserves_request(op.as_str())
        }
        Frame::Notification { name, .. } => {
            name.as_str() == DONE || handlers.extensions.reserves_notification(name.as_str())
        }
        other => gotalk_protocol::reserved::is_hello(other),
    }
}

/// The liveness state of a connection and its clock.
pub(super) struct Live {
    machine: Liveness,
    started: Instant,
}

impl Live {
    /// Liveness for a connection whose handshake just completed.
    pub(super) fn new(config: &Config) -> Self {
        let mut settings = config.liveness_config();
        // The read loop enforces the read timeout itself, with ProtocolError 3 and its own
        // close reason; the machine keeps to probes and heartbeats.
        settings.peer_idle_timeout = None;
        let mut machine = Liveness::new(shared(settings), rand::rng().random(), Duration::ZERO);
        machine.handshake(Duration::ZERO);

        Live { machine, started: Instant::now() }
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// When the write loop must next drive the machine.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.machine.next_deadline().map(|at| self.started + at)
    }
}

/// `settings`, shared with the connections made before this one with the same settings
/// (usually all of a server's): the settings are about a hundred bytes, which every
/// connection would otherwise hold a copy of.
fn shared(settings: LivenessConfig) -> Arc<LivenessConfig> {
    static LAST: Mutex<Option<Arc<LivenessConfig>>> = Mutex::new(None);
    let mut last = lock(&LAST);
    match &*last {
        Some(shared) if **shared == settings => shared.clone(),
        _ => last.insert(Arc::new(settings)).clone(),
    }
}

/// Set while the read loop waits for bytes with its timer armed for liveness too: the write
/// loop then keeps no timer of its own. A timer made for each of the writer's waits, and
/// dropped when the queue woke it first, cost about 700 of a request's 8,000 instructions at
/// one request in flight.
pub(super) const READ_WAITING: u8 = 1;
/// Set by the read loop when liveness is due; the write loop drives it, clears this and
/// wakes the task, and the read loop then arms its timer for liveness's next deadline.
pub(super) const LIVE_DUE: u8 = 2;

impl Sock {
    pub(super) fn live_flag(&self, flag: u8) -> bool {
        self.shared.live_flags.load(Ordering::Relaxed) & flag != 0
    }

    /// Sets or clears `flag`. Plain reads and writes suffice: only the connection's task,
    /// running one loop at a time, touches the flags.
    pub(super) fn set_live_flag(&self, flag: u8, on: bool) {
        let flags = self.shared.live_flags.load(Ordering::Relaxed);
        let new = if on { flags | flag } else { flags & !flag };
        if new != flags {
            self.shared.live_flags.store(new, Ordering::Relaxed);
        }
    }

    /// Bytes arrived from the peer, at `at` (the read loop's clock reading, shared rather
    /// than read again).
    pub(super) fn mark_inbound(&self, at: Instant) {
        let mut live = lock(&self.shared.live);
        let now = at.saturating_duration_since(live.started);
        live.machine.inbound(now);
    }

    /// A probe's answer arrived (a WebSocket pong, or the result of `$ping`). A cookie this
    /// connection never sent closes it with ProtocolError 2. True when it answered a probe
    /// still waiting, with its cookie.
    pub(super) fn on_pong(&self, echo: &[u8]) -> bool {
        let (result, events) = {
            let mut live = lock(&self.shared.live);
            let now = live.now();
            (live.machine.pong(now, echo), live.machine.take_events())
        };
        let answered = events.iter().any(|e| matches!(e, Event::Acked { verified: true, .. }));
        self.report(events);
        if let Err(wrong) = result {
            self.close_with(
                CloseReason::InvalidMessage(wrong.to_string()),
                Some(ProtocolErrorCode::InvalidMessage),
            );
        }
        answered
    }

    /// Whether a pong answering one of this side's probes restarts the read timeout. Not on
    /// a connection a server accepted over WebSocket: pongs may come between the fragments
    /// of a message trickled a byte at a time, and answering pings is automatic in every
    /// WebSocket library, so there only data restarts it. A client's peer is the server it
    /// chose to reach, and a server that sends nothing while idle (Go's, by default) is
    /// alive exactly as long as it answers.
    pub(super) fn pongs_restart_read_timeout(&self) -> bool {
        self.shared.info.request.is_none()
    }

    /// The peer showed that it understands the reserved messages. A server answers its
    /// hello with its own, and the extensions may now send theirs.
    pub(super) fn peer_understands_reserved_now(&self) {
        if !self.shared.hello_said.swap(true, Ordering::AcqRel) {
            self.send_now(gotalk_protocol::reserved::hello());
        }
        if !self.shared.peer_understands_reserved.swap(true, Ordering::AcqRel) {
            self.shared.handlers.peer_understands_reserved(self);
        }
    }

    /// The peer said it is done (`$done`).
    pub(super) fn on_peer_done(&self) {
        let events = {
            let mut live = lock(&self.shared.live);
            live.machine.peer_done();
            live.machine.take_events()
        };
        self.shared.peer_done().cancel();
        self.report(events);
    }

    /// Whether the peer may still send requests: after `$done` a request is a protocol error.
    /// Read from the signal `$done` fires rather than from the machine, which would take the
    /// liveness lock for every request.
    pub(super) fn peer_may_request(&self) -> bool {
        !self.shared.peer_done().is_cancelled()
    }

    /// When the write loop must next call [`drive_liveness`](Self::drive_liveness).
    pub(super) fn liveness_deadline(&self) -> Option<Instant> {
        lock(&self.shared.live).deadline()
    }

    /// Does what liveness asks for now: heartbeats and WebSocket pings go into `writer`
    /// (the first value is true when it buffered any), `$ping` requests go out on a task of
    /// their own, and a dead peer closes the connection.
    ///
    /// The second value is when to drive it next, read under the same lock. It may be early,
    /// never late, until the machine is driven again: what happens meanwhile (bytes or a
    /// pong arriving, a probe withheld) only moves its deadlines later.
    pub(super) fn drive_liveness<W: FrameWriter>(&self, writer: &mut W) -> (bool, Option<Instant>) {
        let (actions, mut events, deadline) = {
            let mut live = lock(&self.shared.live);
            let now = live.now();
            let mut actions = Vec::new();
            while let Some(action) = live.machine.poll(now) {
                actions.push(action);
            }
            (actions, live.machine.take_events(), live.deadline())
        };
        let mut buffered = false;
        for action in actions {
            match action {
                Action::Heartbeat(_) => {
                    let load = self.shared.config.heartbeat_load_now();
                    writer.buffer_frame(&Frame::Heartbeat { load, time: unix_time() });
                    buffered = true;
                }
                Action::Probe(cookie) => {
                    if writer.buffer_ping(&cookie.0) {
                        buffered = true;
                    } else if self.peer_understands_reserved() {
                        self.probe_with_request(cookie);
                    } else {
                        // Another implementation would see `$ping` in its handlers. Its own
                        // traffic and heartbeats (Go's client sends one every 20 s) have to
                        // show it alive within the rule's bound.
                        lock(&self.shared.live).machine.withhold(cookie);
                        events.retain(|e| *e != Event::ProbeSent(cookie));
                    }
                }
                Action::Dead(death) => {
                    tracing::debug!(parent: self.shared.span(), %death, "peer declared dead");
                    let reason = CloseReason::PeerDead(death.to_string());
                    self.close_with(reason, Some(ProtocolErrorCode::Timeout));
                }
            }
        }
        self.report(events);
        (buffered, deadline)
    }

    /// Probes with the reserved request. An ErrorResult (a peer without `$ping`) still shows
    /// the peer is alive.
    fn probe_with_request(&self, cookie: Cookie) {
        let sock = self.clone();
        tokio::spawn(async move {
            match sock.buffer_request(PING_OP, Bytes::copy_from_slice(&cookie.0)).await {
                Ok(echo) => {
                    sock.on_pong(&echo);
                }
                Err(Error::Remote(_)) => {
                    let events = {
                        let mut live = lock(&sock.shared.live);
                        let now = live.now();
                        live.machine.probe_refused(now, cookie);
                        live.machine.take_events()
                    };
                    sock.report(events);
                }
                // Closed or ending: nothing left to probe.
                Err(_) => {}
            }
        });
    }

    fn report(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        for attached in lock(&self.shared.attachments).iter() {
            if let Some(counters) = attached.downcast_ref::<Arc<LivenessCounters>>() {
                events.iter().for_each(|event| counters.record(event));
            }
        }
        if let Some(hook) = &self.shared.handlers.on_liveness {
            for event in events {
                crate::handlers::call_hook("on_liveness", || hook(self, event));
            }
        }
    }

    /// Counts this connection's liveness events in a registry's counters too, for as long as
    /// its transport is up. Kept with the attachments: a field of their own would be in
    /// every connection's state.
    pub(crate) fn count_liveness_in(&self, counters: Arc<LivenessCounters>) {
        let known = lock(&self.shared.attachments).iter().any(|attached| {
            attached
                .downcast_ref::<Arc<LivenessCounters>>()
                .is_some_and(|c| Arc::ptr_eq(c, &counters))
        });
        if !known {
            self.attach(counters);
        }
    }

    /// The last measured round trip of a liveness probe.
    pub fn probe_rtt(&self) -> Option<Duration> {
        lock(&self.shared.live).machine.rtt()
    }
}
