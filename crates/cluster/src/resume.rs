//! Handing a kept session from the instance that holds it (O) to the instance its peer
//! reconnected to (X), each message to it delivered exactly once and in order.
//!
//! It rests on one property of the bus: every subscriber of a channel receives what is
//! published on it in the one order the bus server processed the publishes (one Redis
//! server; one NATS server). X subscribes to the peer's channel first and then asks, on that
//! same channel, for the session. The ask is a point T in the channel's order that both
//! instances see:
//!
//! - a delivery before T reaches O before the ask, so O answers it and puts it in the
//!   session's mailbox, which it hands over; X drops its own copy;
//! - a delivery after T reaches O after the ask, when O has given the session away and
//!   answers nothing; X keeps it, and answers it once the session is its own.
//!
//! X learns where T is when its own ask comes back to it on the channel. What O held goes
//! into the new mailbox first, then what X kept, then whatever comes next. O's answer also
//! carries the session's groups (with the peer's description in each), which X joins and
//! O leaves; a group message published during the handover reaches the peer at most once.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use gotalk::protocol::relay::PeerId;
use gotalk::relay::{undeliverable, Bus, Mailbox, Member, Secret, Undeliverable};
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

use crate::bus::{lock, Inner, Live};
use crate::envelope::{decode_handover, encode_handover, Handover, Msg, Outcome};
use crate::link::Reply;

/// Deliveries X keeps during one handover, at most: past it, one goes unanswered (its sender
/// sees a timeout) rather than held without bound.
const MAX_KEPT: usize = 4096;

/// How long O leaves unanswered what still arrives for a session it handed over, until it
/// has unsubscribed from the peer's channel.
const GIVEN_FOR: Duration = Duration::from_secs(10);

/// The handovers an instance is part of.
#[derive(Default)]
pub(crate) struct Handovers {
    /// Sessions this instance is taking over.
    taking: HashMap<PeerId, Taking>,
    /// Sessions this instance handed to another, and when.
    given: HashMap<PeerId, Instant>,
}

struct Taking {
    /// This instance's own ask came back on the peer's channel.
    past_ask: watch::Sender<bool>,
    /// Deliveries that came after the ask, with whom to answer.
    kept: Vec<(Bytes, Reply)>,
}

impl Handovers {
    /// True when a delivery to `to` is not this instance's to answer: one for a session
    /// being taken over (kept if it came after the ask, dropped if before: the holder has
    /// it), or for a session handed away.
    pub(crate) fn not_answered(&mut self, to: PeerId, payload: &Bytes, reply: &Reply) -> bool {
        if let Some(taking) = self.taking.get_mut(&to) {
            if *taking.past_ask.borrow() && taking.kept.len() < MAX_KEPT {
                taking.kept.push((payload.clone(), reply.clone()));
            }
            return true;
        }
        self.given.contains_key(&to)
    }

    /// This instance's own ask for `id` came back.
    pub(crate) fn own_resume(&mut self, id: PeerId) {
        if let Some(taking) = self.taking.get(&id) {
            taking.past_ask.send_replace(true);
        }
    }

    fn given(&mut self, id: PeerId) {
        let now = Instant::now();
        self.given.retain(|_, at| now.duration_since(*at) < GIVEN_FOR);
        self.given.insert(id, now);
    }
}

impl Inner {
    /// O: another instance asks for the session `id`. Answered when this instance holds it
    /// and `secret` is its own (the session, which leaves this instance), or holds the id
    /// and the secret is wrong (a refusal); not at all when the id is not here.
    pub(crate) fn hand_session_over(
        self: &Arc<Self>,
        live: &Arc<Live>,
        id: PeerId,
        secret: Secret,
        reply: Reply,
    ) {
        if !lock(&self.state).peers.contains_key(&id) {
            return;
        }
        let handover = self.sessions.take(id, &secret).map(|mailbox| {
            let handover = {
                // In one step with taking its messages, so a local sender either got its
                // message into what is handed over or finds the id gone from here.
                let mut state = lock(&self.state);
                state.peers.remove(&id);
                state.handovers.given(id);
                let groups = state.joined.get(&id).cloned().unwrap_or_default();
                let groups = groups
                    .into_iter()
                    .filter_map(|group| {
                        let local = state.groups.get(&group)?;
                        let member = local.roster.members.iter().find(|m| m.peer == id)?;
                        let meta = member.meta.clone();
                        Some((group, meta))
                    })
                    .collect();
                Handover { groups, held: mailbox.take_all() }
            };
            // Leaves its groups (everyone is told) and the peer's channel.
            if let Some(bus) = self.bus.get().and_then(Weak::upgrade) {
                bus.unregister(id);
            }
            handover
        });
        tracing::debug!(%id, handed = handover.is_some(), "cluster bus: asked for a session");
        let answer = encode_handover(handover.as_ref());
        self.answer(live, reply, answer);
    }

    /// X: takes the session `id` over from the instance that holds it, into `mailbox`.
    pub(crate) async fn resume(
        self: &Arc<Self>,
        id: PeerId,
        secret: Secret,
        mailbox: Mailbox,
    ) -> bool {
        let Some(live) = self.up_live() else { return false };
        let mut past_ask = {
            let mut state = lock(&self.state);
            if state.peers.contains_key(&id) || state.handovers.taking.contains_key(&id) {
                return false;
            }
            let (past_ask, seen) = watch::channel(false);
            state.handovers.taking.insert(id, Taking { past_ask, kept: Vec::new() });
            seen
        };
        let channel = self.peer_channel(id);
        self.subscribe(&live, vec![channel.clone()]).await;
        let ask = Msg::Resume { origin: self.iid, id, secret: *secret.as_bytes() }.encode();
        let wait = self.settings.relay_timeout;
        let answer = tokio::select! {
            biased;
            answer = live.session.request(&channel, ask, wait) => answer.ok(),
            () = live.gone.cancelled() => None,
        };
        let handover = answer.as_ref().and_then(decode_handover).flatten();
        if handover.is_some() {
            // The answer may overtake the ask's echo, which comes on another channel: what
            // arrives before the echo was the holder's. Should the echo not come, the
            // session is taken anyway: a message twice beats a session lost.
            let _ = timeout(wait, past_ask.wait_for(|past| *past)).await;
        }
        let outcomes = {
            let mut state = lock(&self.state);
            let taking = state.handovers.taking.remove(&id);
            let Some(handover) = &handover else {
                drop(state);
                if !lock(&self.state).peers.contains_key(&id) {
                    self.unsubscribe(&live, vec![channel]);
                }
                return false;
            };
            // Held first, then what came after the ask, then (once registered) the rest.
            let _ = mailbox.restore(handover.held.clone());
            let kept = taking.map(|t| t.kept).unwrap_or_default();
            let outcomes: Vec<(Reply, Outcome)> = kept
                .into_iter()
                .map(|(payload, reply)| {
                    let outcome = match mailbox.push(payload).map_err(undeliverable) {
                        Ok(()) => Outcome::Delivered,
                        Err(Undeliverable::QueueFull) => Outcome::Full,
                        Err(_) => Outcome::Unknown,
                    };
                    (reply, outcome)
                })
                .collect();
            state.handovers.given.remove(&id);
            state.peers.insert(id, mailbox);
            outcomes
        };
        for (reply, outcome) in outcomes {
            self.answer(&live, reply, outcome.encode());
        }
        if let (Some(bus), Some(handover)) = (self.bus.get().and_then(Weak::upgrade), handover) {
            for (group, meta) in handover.groups {
                bus.join(&group, Member { peer: id, meta });
            }
        }
        tracing::debug!(%id, "cluster bus: session taken over");
        true
    }
}
