//! [`ClusterBus`]: the relay's [`Bus`] over a [`Link`], for several gateway instances.
//!
//! Channels, under the prefix: `peer:<id>` for each registered peer (the bus is the directory:
//! a relay to an id nobody subscribes to is "unknown peer" at once), `inst:<iid>` for each
//! instance (snapshots it asked for, history it asked for, its liveness probe), `all` for
//! broadcasts, `group:<name>` for each group while this instance has members in it (and a
//! while after), and `presence` for heartbeats and member changes.
//!
//! Nothing here waits on the bus while holding up a caller: every call hands its message to
//! the session at once (so messages of one sender keep their order) and finishes in a task or
//! in the future the caller awaits, under a deadline. While the bus is down, relays to other
//! instances answer "unavailable" at once, relays waiting for answers end as "timeout", and
//! everything local keeps working. Nothing is queued for later.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use gotalk::protocol::relay::PeerId;
use gotalk::relay::{
    push_note, undeliverable, Bus, BusState, Delivering, Fetching, Group, Mailbox, Member, Note,
    Registering, Resuming, Roster, Secret, Sessions, Undeliverable, MAX_KEEP,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;

use crate::envelope::{decode_notes, encode_notes, Change, Iid, Msg, Outcome, Rows};
use crate::link::{Incoming, Link, LinkError, Reply, RequestError, Session};
use crate::metrics::{bump, BusMetrics, Counters, Readiness};
use crate::presence::{Applied, Presence};
use crate::settings::ClusterSettings;
use crate::supervisor;

/// Why a [`ClusterBus`] did not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The first connection to the bus failed: a wrong address, user or password, or a bus
    /// that is not running.
    #[error("cannot connect to the {kind} bus: {error}")]
    Connect {
        /// The bus kind.
        kind: &'static str,
        /// What the bus or its client said.
        error: LinkError,
    },
    /// The prefix has a character that is not safe in a channel name.
    #[error("{0:?} is not a channel prefix: letters, digits, '-' and '_' only")]
    BadPrefix(String),
}

/// The relay's registry, groups and delivery across every instance that shares a bus.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use gotalk::relay::Relay;
/// use gotalk_cluster::{ClusterBus, ClusterSettings, redis::RedisLink};
///
/// let link = RedisLink::new("redis://127.0.0.1:6379")?;
/// let bus = ClusterBus::start(link, ClusterSettings::default()).await?;
/// let relay = Relay::new().bus(bus.clone());
/// // … serve with `Handlers::relay(relay)`; on the way out:
/// bus.shutdown().await;
/// # Ok(()) }
/// ```
pub struct ClusterBus {
    inner: Arc<Inner>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for ClusterBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterBus")
            .field("kind", &self.inner.link.kind())
            .field("iid", &format_args!("{:016x}", self.inner.iid))
            .field("up", &self.inner.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// One session with the bus, while it lasts.
pub(crate) struct Live {
    pub(crate) session: Box<dyn Session>,
    /// Cancelled when the session is thrown away: what waits on it ends at once.
    pub(crate) gone: CancellationToken,
    /// Cancelled by whoever sees the session fail; the supervisor replaces it.
    pub(crate) failed: CancellationToken,
}

impl Live {
    pub(crate) fn new(session: Box<dyn Session>) -> Self {
        Live { session, gone: CancellationToken::new(), failed: CancellationToken::new() }
    }

    pub(crate) fn fail(&self, why: &str) {
        if !self.failed.is_cancelled() {
            tracing::warn!(why, "cluster bus: the session failed");
            self.failed.cancel();
        }
    }
}

pub(crate) struct Inner {
    pub(crate) link: Box<dyn Link>,
    pub(crate) settings: ClusterSettings,
    pub(crate) iid: Iid,
    inst: String,
    all: String,
    presence_channel: String,
    pub(crate) state: Mutex<State>,
    /// The sessions of this instance's connections, held ones included.
    pub(crate) sessions: Sessions,
    /// The bus itself, for a session handed over here to join its groups.
    pub(crate) bus: std::sync::OnceLock<std::sync::Weak<ClusterBus>>,
    pub(crate) up: AtomicBool,
    pub(crate) bus_state: watch::Sender<BusState>,
    pub(crate) counters: Counters,
    /// Bytes handed to the bus and not done with.
    outbound: AtomicUsize,
    /// Relays to other instances waiting for their answers.
    pending: AtomicUsize,
    pub(crate) shutdown: CancellationToken,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) peers: HashMap<PeerId, Mailbox>,
    pub(crate) groups: HashMap<Group, Local>,
    pub(crate) joined: HashMap<PeerId, Vec<Group>>,
    /// Sessions being taken over from another instance, and sessions just handed to one.
    pub(crate) handovers: crate::resume::Handovers,
    presence: Presence,
    /// The sequence number of this instance's latest member change.
    seq: u64,
    live: Option<Arc<Live>>,
    /// Set by the first hello: until then the others' answers to it, the snapshots of who is
    /// where, may still be on their way.
    heard_by: Option<Instant>,
}

/// A group this instance subscribes to: it has members here, or had until a moment ago.
pub(crate) struct Local {
    pub(crate) roster: Roster,
    /// When the last local member left; the subscription ends after the linger.
    empty_since: Option<Instant>,
    /// True once the kept messages were fetched from another instance (or there was none to
    /// ask).
    fetched: watch::Receiver<bool>,
}

pub(crate) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every section is a few map operations on owned values and cannot leave them half-done.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Polls `future` once, so what it hands to the bus is handed over now, in the caller's
/// order; the rest runs in a task.
pub(crate) fn hand_over(future: impl Future<Output = ()> + Send + 'static) {
    let mut future = Box::pin(future);
    if poll_now(&mut future).is_none() {
        tokio::spawn(future);
    }
}

fn poll_now<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    match Pin::new(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// Outbound bytes and a pending slot, given back however the relay or publish ends.
struct Reserved {
    inner: Arc<Inner>,
    bytes: usize,
    pending: bool,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.inner.outbound.fetch_sub(self.bytes, Ordering::AcqRel);
        if self.pending {
            self.inner.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Inner {
    fn reserve(self: &Arc<Self>, bytes: usize, pending: bool) -> Option<Reserved> {
        let limit = self.settings.outbound_bytes;
        self.outbound
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                // One message always fits an empty queue, however large.
                (n == 0 || n.saturating_add(bytes) <= limit).then_some(n + bytes)
            })
            .ok()?;
        let mut reserved = Reserved { inner: self.clone(), bytes, pending: false };
        if pending {
            let max = self.settings.max_pending;
            self.pending
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
                .ok()?;
            reserved.pending = true;
        }
        Some(reserved)
    }

    pub(crate) fn channel(&self, parts: &[&str]) -> String {
        let mut all = vec![self.settings.prefix.as_str()];
        all.extend_from_slice(parts);
        self.link.channel(&all)
    }

    pub(crate) fn peer_channel(&self, id: PeerId) -> String {
        self.channel(&["peer", &id.to_string()])
    }

    fn group_channel(&self, group: &Group) -> String {
        self.channel(&["group", group.as_str()])
    }

    fn inst_channel(&self, iid: Iid) -> String {
        self.channel(&["inst", &format!("{iid:016x}")])
    }

    /// The session, when the bus is up.
    pub(crate) fn up_live(&self) -> Option<Arc<Live>> {
        if !self.up.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.state).live.clone()
    }

    /// Answers a request through `reply`, handed over now; a bus that fails the answer, or
    /// takes longer than a call may, fails the session.
    pub(crate) fn answer(self: &Arc<Self>, live: &Arc<Live>, reply: Reply, answer: Bytes) {
        let (inner, live) = (self.clone(), live.clone());
        hand_over(async move {
            let deadline = inner.settings.call_timeout;
            if let Ok(Err(e)) = timeout(deadline, live.session.reply(&reply, answer)).await {
                live.fail(&e.0);
            }
        });
    }

    /// Publishes `msg` on `channel`, handed over now; false when it could not be (the
    /// outbound queue is full), counted as unpublished.
    fn send(self: &Arc<Self>, live: &Arc<Live>, channel: String, msg: Bytes) -> bool {
        let Some(reserved) = self.reserve(msg.len(), false) else {
            bump(&self.counters.unpublished);
            return false;
        };
        let (inner, live) = (self.clone(), live.clone());
        hand_over(async move {
            let _reserved = reserved;
            let deadline = inner.settings.call_timeout;
            match timeout(deadline, live.session.publish(&channel, msg)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => live.fail(&e.0),
                Err(_) => live.fail("a publish took too long"),
            }
        });
        true
    }

    pub(crate) fn subscribe(
        self: &Arc<Self>,
        live: &Arc<Live>,
        channels: Vec<String>,
    ) -> Registering {
        let (inner, live) = (self.clone(), live.clone());
        let mut future: Registering = Box::pin(async move {
            let deadline = inner.settings.connect_timeout;
            match timeout(deadline, live.session.subscribe(&channels)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => live.fail(&e.0),
                Err(_) => live.fail("a subscribe took too long"),
            }
        });
        match poll_now(&mut future) {
            Some(()) => Box::pin(std::future::ready(())),
            None => future,
        }
    }

    pub(crate) fn unsubscribe(self: &Arc<Self>, live: &Arc<Live>, channels: Vec<String>) {
        let (inner, live) = (self.clone(), live.clone());
        hand_over(async move {
            let deadline = inner.settings.connect_timeout;
            match timeout(deadline, live.session.unsubscribe(&channels)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => live.fail(&e.0),
                Err(_) => live.fail("an unsubscribe took too long"),
            }
        });
    }

    fn presence_changed(&self) {
        self.bus_state.send_modify(|s| s.presence += 1);
    }

    /// Records a change to this instance's members and tells the others, in order.
    fn changed(self: &Arc<Self>, state: &mut State, change: Change) {
        state.seq += 1;
        if let Some(live) = state.live.clone() {
            let msg = Msg::Delta { origin: self.iid, seq: state.seq, change };
            self.send(&live, self.presence_channel.clone(), msg.encode());
        }
    }

    fn rows(state: &State) -> Rows {
        state
            .groups
            .iter()
            .filter(|(_, local)| !local.roster.members.is_empty())
            .map(|(group, local)| (group.clone(), local.roster.members.clone()))
            .collect()
    }

    fn snapshot(&self, state: &State) -> Bytes {
        Msg::Snapshot { origin: self.iid, seq: state.seq, rows: Self::rows(state) }.encode()
    }

    /// Makes `live` the session and lists every channel it must subscribe to: from here on
    /// registrations and joins subscribe through it themselves.
    pub(crate) fn install(&self, live: &Arc<Live>) -> Vec<String> {
        let mut state = lock(&self.state);
        state.live = Some(live.clone());
        let mut channels = vec![self.inst.clone(), self.all.clone(), self.presence_channel.clone()];
        channels.extend(state.peers.keys().map(|id| self.peer_channel(*id)));
        channels.extend(state.groups.keys().map(|g| self.group_channel(g)));
        channels
    }

    /// Subscribed: tells the others who is here and asks who is there, then reports up.
    pub(crate) fn announce(self: &Arc<Self>, live: &Arc<Live>, recovered: bool) {
        {
            let mut state = lock(&self.state);
            let now = Instant::now();
            state.presence.thaw(now);
            state.heard_by.get_or_insert(now + self.settings.history_timeout);
            let snapshot = self.snapshot(&state);
            self.send(live, self.presence_channel.clone(), snapshot);
            let hello = Msg::Hello { origin: self.iid }.encode();
            self.send(live, self.presence_channel.clone(), hello);
        }
        self.up.store(true, Ordering::Release);
        self.bus_state.send_modify(|s| {
            s.up = true;
            if recovered {
                s.recoveries += 1;
            }
        });
    }

    /// The session has gone: relays waiting on it end now, and what comes next waits for the
    /// next one.
    pub(crate) fn uninstall(&self, live: &Arc<Live>) {
        self.up.store(false, Ordering::Release);
        {
            let mut state = lock(&self.state);
            if state.live.as_ref().is_some_and(|l| Arc::ptr_eq(l, live)) {
                state.live = None;
            }
        }
        live.gone.cancel();
        self.counters.add_overflow(live.session.dropped());
        self.bus_state.send_if_modified(|s| std::mem::replace(&mut s.up, false));
    }

    pub(crate) fn heartbeat(self: &Arc<Self>, live: &Arc<Live>) {
        let expired = {
            let mut state = lock(&self.state);
            let beat = Msg::Beat { origin: self.iid, seq: state.seq }.encode();
            self.send(live, self.presence_channel.clone(), beat);
            state.presence.expire(Instant::now(), self.settings.presence_expiry)
        };
        if expired {
            self.presence_changed();
        }
    }

    pub(crate) fn probe(self: &Arc<Self>, live: &Arc<Live>) {
        self.send(live, self.inst.clone(), Msg::Probe { origin: self.iid }.encode());
    }

    /// Ends the subscriptions of groups whose last local member left more than the linger
    /// ago.
    pub(crate) fn sweep(self: &Arc<Self>, live: &Arc<Live>) {
        let linger = self.settings.group_linger;
        let now = Instant::now();
        let gone: Vec<String> = {
            let mut state = lock(&self.state);
            let mut gone = Vec::new();
            state.groups.retain(|group, local| {
                let stale = local.empty_since.is_some_and(|t| now.duration_since(t) >= linger);
                if stale {
                    gone.push(self.group_channel(group));
                }
                !stale
            });
            gone
        };
        if !gone.is_empty() {
            self.unsubscribe(live, gone);
        }
    }

    /// Leaves the cluster: tells the others, then unsubscribes the peers' channels, so that
    /// from its return a relay to them is "unknown peer" at once, not one the bus hands to a
    /// connection on its way out that never answers.
    async fn goodbye(&self) {
        let (live, peers) = {
            let state = lock(&self.state);
            let Some(live) = state.live.clone() else { return };
            (live, state.peers.keys().map(|id| self.peer_channel(*id)).collect::<Vec<_>>())
        };
        let bye = Msg::Bye { origin: self.iid }.encode();
        let deadline = self.settings.call_timeout;
        let _ = timeout(deadline, live.session.publish(&self.presence_channel, bye)).await;
        for batch in peers.chunks(self.settings.subscribe_batch) {
            let deadline = self.settings.connect_timeout;
            if !matches!(timeout(deadline, live.session.unsubscribe(batch)).await, Ok(Ok(()))) {
                break;
            }
        }
    }

    /// Handles one message from the bus. Runs on the supervisor's task: it never waits.
    pub(crate) fn handle(self: &Arc<Self>, live: &Arc<Live>, incoming: Incoming) {
        let Some(msg) = Msg::decode(&incoming.payload) else {
            bump(&self.counters.malformed);
            return;
        };
        match msg {
            Msg::Deliver { to, payload } => {
                let Some(reply) = incoming.reply else {
                    bump(&self.counters.malformed);
                    return;
                };
                let mailbox = {
                    let mut state = lock(&self.state);
                    if state.handovers.not_answered(to, &payload, &reply) {
                        return;
                    }
                    state.peers.get(&to).cloned()
                };
                let outcome = match mailbox.map(|m| m.push(payload).map_err(undeliverable)) {
                    Some(Ok(())) => Outcome::Delivered,
                    Some(Err(Undeliverable::QueueFull)) => Outcome::Full,
                    _ => Outcome::Unknown,
                };
                self.answer(live, reply, outcome.encode());
            }
            // Our own echoes: their arrival (for the probe) is all that counts.
            Msg::Note { origin, .. }
            | Msg::Hello { origin }
            | Msg::SnapshotPlease { origin }
            | Msg::Bye { origin }
            | Msg::Beat { origin, .. }
            | Msg::Delta { origin, .. }
            | Msg::Snapshot { origin, .. }
            | Msg::Probe { origin }
                if origin == self.iid => {}
            Msg::Note { group: Some(group), note, .. } => {
                let recipients = {
                    let mut state = lock(&self.state);
                    let State { peers, groups, .. } = &mut *state;
                    let Some(local) = groups.get_mut(&group) else { return };
                    local.roster.keep(&note);
                    recipients(&local.roster.members, peers)
                };
                fan_out(&recipients, &note);
            }
            Msg::Note { group: None, note, .. } => {
                let everyone = everyone(&lock(&self.state).peers);
                fan_out(&everyone, &note);
            }
            Msg::Hello { origin } | Msg::SnapshotPlease { origin } => {
                let snapshot = self.snapshot(&lock(&self.state));
                self.send(live, self.inst_channel(origin), snapshot);
            }
            Msg::Bye { origin } => {
                if lock(&self.state).presence.forget(origin) {
                    self.presence_changed();
                }
            }
            Msg::Beat { origin, seq } => {
                if lock(&self.state).presence.beat(origin, seq, Instant::now()) {
                    self.ask_snapshot(live, origin);
                }
            }
            Msg::Delta { origin, seq, change } => {
                let applied = lock(&self.state).presence.delta(origin, seq, change, Instant::now());
                match applied {
                    Applied::Yes(true) => self.presence_changed(),
                    Applied::Gap => self.ask_snapshot(live, origin),
                    Applied::Yes(false) | Applied::Stale => {}
                }
            }
            Msg::Snapshot { origin, seq, rows } => {
                if lock(&self.state).presence.snapshot(origin, seq, rows, Instant::now()) {
                    self.presence_changed();
                }
            }
            Msg::HistoryPlease { group } => {
                let Some(reply) = incoming.reply else {
                    bump(&self.counters.malformed);
                    return;
                };
                let kept = {
                    let state = lock(&self.state);
                    let kept = state.groups.get(&group).map(|l| &l.roster.kept);
                    encode_notes(kept.into_iter().flatten().collect::<Vec<_>>().into_iter())
                };
                self.answer(live, reply, kept);
            }
            // Another instance's probe, on our channel by mistake: nothing to do.
            Msg::Probe { .. } => {}
            Msg::Resume { origin, id, .. } if origin == self.iid => {
                lock(&self.state).handovers.own_resume(id);
            }
            Msg::Resume { id, secret, .. } => {
                let Some(reply) = incoming.reply else {
                    bump(&self.counters.malformed);
                    return;
                };
                self.hand_session_over(live, id, Secret::from_random(secret), reply);
            }
        }
    }

    fn ask_snapshot(self: &Arc<Self>, live: &Arc<Live>, origin: Iid) {
        let ask = Msg::SnapshotPlease { origin: self.iid }.encode();
        self.send(live, self.inst_channel(origin), ask);
    }

    /// The instances with members of `group`, once this instance can know them: just after
    /// its hello the others' snapshots may still be on their way, so with none known yet it
    /// waits for one until the history timeout after the hello.
    async fn holders(&self, live: &Live, group: &Group) -> Vec<Iid> {
        // Taken before the first look, so no change after it is missed.
        let mut changes = self.bus_state.subscribe();
        loop {
            let (holders, heard_by) = {
                let state = lock(&self.state);
                (state.presence.holders(group), state.heard_by)
            };
            let waiting = heard_by.is_none_or(|by| Instant::now() < by);
            if !holders.is_empty() || !waiting {
                return holders;
            }
            // Before the hello (the session is still being subscribed) the bound is the
            // session's: it says hello or goes.
            let until = heard_by.unwrap_or_else(|| Instant::now() + self.settings.connect_timeout);
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return holders },
                () = sleep_until(until) => {}
                () = live.gone.cancelled() => return holders,
            }
        }
    }

    /// A group's kept messages from the first of `holders` that answers.
    async fn fetch(&self, live: &Live, group: &Group, holders: Vec<Iid>) -> Option<Vec<Note>> {
        let ask = Msg::HistoryPlease { group: group.clone() }.encode();
        let wait = self.settings.history_timeout;
        for iid in holders.into_iter().take(3) {
            let channel = self.inst_channel(iid);
            let answer = tokio::select! {
                biased;
                answer = timeout(wait, live.session.request(&channel, ask.clone(), wait)) => answer,
                () = live.gone.cancelled() => return None,
            };
            match answer {
                Ok(Ok(answer)) => match decode_notes(&answer) {
                    Some(notes) => return Some(notes),
                    None => bump(&self.counters.malformed),
                },
                Ok(Err(RequestError::Link(e))) => {
                    live.fail(&e.0);
                    return None;
                }
                Ok(Err(_)) | Err(_) => {}
            }
        }
        None
    }

    /// Merges fetched messages (older) with those that arrived since the subscription.
    fn merge(&self, group: &Group, fetched: Vec<Note>) {
        let mut state = lock(&self.state);
        let Some(local) = state.groups.get_mut(group) else { return };
        let arrived = std::mem::take(&mut local.roster.kept);
        let mut kept: VecDeque<Note> = fetched.into();
        for note in arrived {
            if !kept.contains(&note) {
                kept.push_back(note);
            }
        }
        let cap = kept.back().map_or(0, |n| n.keep).min(MAX_KEEP);
        while kept.len() > cap {
            kept.pop_front();
        }
        local.roster.kept = kept;
    }
}

fn recipients(members: &[Member], peers: &HashMap<PeerId, Mailbox>) -> Vec<(PeerId, Mailbox)> {
    members.iter().filter_map(|m| Some((m.peer, peers.get(&m.peer)?.clone()))).collect()
}

fn everyone(peers: &HashMap<PeerId, Mailbox>) -> Vec<(PeerId, Mailbox)> {
    peers.iter().map(|(id, m)| (*id, m.clone())).collect()
}

fn fan_out(recipients: &[(PeerId, Mailbox)], note: &Note) {
    for (peer, mailbox) in recipients {
        // A member whose queue is full is disconnected by its own connection (overflow).
        let _ = push_note(mailbox, *peer, note);
    }
}

impl ClusterBus {
    /// Connects to the bus through `link` and starts the instance: its own reconnecting
    /// supervisor runs until [`shutdown`](Self::shutdown) or the last handle is dropped.
    /// Returns once the first connection is subscribed, or after the connect timeout with
    /// the bus [degraded](Readiness::Degraded) while it keeps trying.
    ///
    /// # Errors
    /// [`StartError::Connect`] when the first connection fails (wrong address, user or
    /// password), [`StartError::BadPrefix`].
    pub async fn start(
        mut link: impl Link,
        settings: ClusterSettings,
    ) -> Result<Arc<ClusterBus>, StartError> {
        let prefix_ok = !settings.prefix.is_empty()
            && settings.prefix.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_');
        if !prefix_ok {
            return Err(StartError::BadPrefix(settings.prefix));
        }
        // The link's own channels go under the same prefix as the cluster's.
        link.set_prefix(&settings.prefix);
        let iid: Iid = rand::random();
        let link: Box<dyn Link> = Box::new(link);
        let name = |parts: &[&str]| {
            let mut all = vec![settings.prefix.as_str()];
            all.extend_from_slice(parts);
            link.channel(&all)
        };
        let (inst, all, presence_channel) =
            (name(&["inst", &format!("{iid:016x}")]), name(&["all"]), name(&["presence"]));
        let inner = Arc::new(Inner {
            settings,
            iid,
            inst,
            all,
            presence_channel,
            state: Mutex::default(),
            sessions: Sessions::new(),
            bus: std::sync::OnceLock::new(),
            up: AtomicBool::new(false),
            bus_state: watch::channel(BusState::default()).0,
            counters: Counters::default(),
            outbound: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            link,
        });
        let first = supervisor::connect(&inner)
            .await
            .map_err(|error| StartError::Connect { kind: inner.link.kind(), error })?;
        let mut state = inner.bus_state.subscribe();
        let task = tokio::spawn(supervisor::run(inner.clone(), first));
        let wait = inner.settings.connect_timeout;
        let _ = timeout(wait, state.wait_for(|s| s.up)).await;
        let bus = Arc::new(ClusterBus { inner, supervisor: Mutex::new(Some(task)) });
        let _ = bus.inner.bus.set(Arc::downgrade(&bus));
        Ok(bus)
    }

    /// Up, or degraded while the bus is being reconnected: for a readiness check.
    pub fn ready(&self) -> Readiness {
        if self.inner.up.load(Ordering::Acquire) {
            Readiness::Up
        } else {
            Readiness::Degraded
        }
    }

    /// The instance's figures now.
    pub fn metrics(&self) -> BusMetrics {
        let inner = &self.inner;
        let (subscribed, instances, live_dropped) = {
            let state = lock(&inner.state);
            let subscribed = match &state.live {
                Some(_) => 3 + state.peers.len() + state.groups.len(),
                None => 0,
            };
            let dropped = state.live.as_ref().map_or(0, |l| l.session.dropped());
            (subscribed, state.presence.instances(), dropped)
        };
        let (mut dropped, relays, relay_p50, relay_p99) = inner.counters.snapshot();
        dropped.overflow += live_dropped;
        let state = inner.bus_state.borrow().clone();
        BusMetrics {
            kind: inner.link.kind(),
            up: inner.up.load(Ordering::Acquire),
            reconnects: inner.counters.reconnects.load(Ordering::Relaxed),
            recoveries: state.recoveries,
            dropped,
            relays,
            relay_p50,
            relay_p99,
            subscribed,
            instances,
        }
    }

    /// This instance's id on the bus (random at each start), as in its channel name.
    pub fn instance(&self) -> String {
        format!("{:016x}", self.inner.iid)
    }

    /// Leaves the cluster: tells the other instances (so this instance's members disappear
    /// from their lists at once), unsubscribes its peers' channels (so from its return a
    /// relay to them from elsewhere is "unknown peer" at once), stops reconnecting, and
    /// closes the connection to the bus. Local delivery keeps working.
    pub async fn shutdown(&self) {
        self.inner.goodbye().await;
        self.inner.shutdown.cancel();
        let task = self.supervisor.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for ClusterBus {
    fn drop(&mut self) {
        self.inner.shutdown.cancel();
    }
}

impl Bus for ClusterBus {
    fn register(&self, id: PeerId, mailbox: Mailbox) -> Registering {
        let live = {
            let mut state = lock(&self.inner.state);
            if state.peers.insert(id, mailbox).is_some() {
                tracing::error!(%id, "relay id registered twice");
            }
            state.live.clone()
        };
        match live {
            Some(live) => self.inner.subscribe(&live, vec![self.inner.peer_channel(id)]),
            // Down: the resubscription after the reconnect includes it.
            None => Box::pin(std::future::ready(())),
        }
    }

    fn unregister(&self, id: PeerId) {
        let inner = &self.inner;
        let (live, left) = {
            let mut state = lock(&inner.state);
            state.peers.remove(&id);
            let groups = state.joined.remove(&id).unwrap_or_default();
            let now = Instant::now();
            let mut left = false;
            for group in groups {
                let Some(local) = state.groups.get_mut(&group) else { continue };
                if local.roster.leave(id) {
                    if local.roster.members.is_empty() {
                        local.empty_since = Some(now);
                    }
                    inner.changed(&mut state, Change::Leave(group, id));
                    left = true;
                }
            }
            (state.live.clone(), left)
        };
        if left {
            inner.presence_changed();
        }
        if let Some(live) = live {
            inner.unsubscribe(&live, vec![inner.peer_channel(id)]);
        }
    }

    fn deliver(&self, to: PeerId, payload: Bytes) -> Delivering {
        let inner = &self.inner;
        let here = lock(&inner.state).peers.get(&to).cloned();
        if let Some(mailbox) = here {
            return Box::pin(std::future::ready(mailbox.push(payload).map_err(undeliverable)));
        }
        let unavailable = || {
            bump(&inner.counters.relay_unavailable);
            Box::pin(std::future::ready(Err(Undeliverable::Unavailable))) as Delivering
        };
        let Some(live) = inner.up_live() else { return unavailable() };
        let msg = Msg::Deliver { to, payload }.encode();
        let Some(reserved) = inner.reserve(msg.len(), true) else { return unavailable() };
        let inner = inner.clone();
        let mut future: Delivering = Box::pin(async move {
            let started = Instant::now();
            let _reserved = reserved;
            let channel = inner.peer_channel(to);
            let wait = inner.settings.relay_timeout;
            let answer = tokio::select! {
                biased;
                answer = live.session.request(&channel, msg, wait) => answer,
                () = live.gone.cancelled() => Err(RequestError::Timeout),
            };
            let counters = &inner.counters;
            let outcome = match answer {
                Ok(answer) => match Outcome::decode(&answer) {
                    Some(Outcome::Delivered) => Ok(()),
                    Some(Outcome::Full) => Err(Undeliverable::QueueFull),
                    Some(Outcome::Unknown) => Err(Undeliverable::UnknownPeer),
                    None => {
                        bump(&counters.malformed);
                        Err(Undeliverable::Timeout)
                    }
                },
                Err(RequestError::NoSubscriber) => Err(Undeliverable::UnknownPeer),
                Err(RequestError::Timeout) => Err(Undeliverable::Timeout),
                // The bus failed under the publish: Redis and NATS deliver at most once, and
                // a publish that did not complete is taken as not sent.
                Err(RequestError::Link(e)) => {
                    live.fail(&e.0);
                    Err(Undeliverable::Unavailable)
                }
            };
            bump(match outcome {
                Ok(()) => &counters.relay_ok,
                Err(Undeliverable::QueueFull) => &counters.relay_full,
                Err(Undeliverable::UnknownPeer) => &counters.relay_unknown,
                Err(Undeliverable::Unavailable) => &counters.relay_unavailable,
                Err(_) => &counters.relay_timeout,
            });
            if outcome.is_ok() {
                counters.latency(started.elapsed());
            }
            outcome
        });
        match poll_now(&mut future) {
            Some(outcome) => Box::pin(std::future::ready(outcome)),
            None => future,
        }
    }

    fn local_peers(&self) -> usize {
        lock(&self.inner.state).peers.len()
    }

    fn sessions(&self) -> Option<&Sessions> {
        Some(&self.inner.sessions)
    }

    fn resume(&self, id: PeerId, secret: Secret, mailbox: Mailbox) -> Resuming {
        let inner = self.inner.clone();
        Box::pin(async move { inner.resume(id, secret, mailbox).await })
    }

    fn join(&self, group: &Group, member: Member) {
        let inner = &self.inner;
        let (changed, first) = {
            let mut state = lock(&inner.state);
            if !state.peers.contains_key(&member.peer) {
                return;
            }
            let peer = member.peer;
            let live = state.live.clone();
            let mut first = None;
            let local = state.groups.entry(group.clone()).or_insert_with(|| {
                let (done, fetched) = watch::channel(live.is_none());
                first = Some((done, live));
                Local { roster: Roster::default(), empty_since: None, fetched }
            });
            local.empty_since = None;
            let changed = local.roster.join(member.clone());
            let joined = state.joined.entry(peer).or_default();
            if !joined.contains(group) {
                joined.push(group.clone());
            }
            if changed {
                inner.changed(&mut state, Change::Join(group.clone(), member));
            }
            (changed, first)
        };
        if changed {
            inner.presence_changed();
        }
        // The first local member: subscribe, then fetch what the group kept from an instance
        // that has members (history asks wait for it).
        if let Some((done, Some(live))) = first {
            let subscribed = inner.subscribe(&live, vec![inner.group_channel(group)]);
            let (inner, group) = (inner.clone(), group.clone());
            tokio::spawn(async move {
                subscribed.await;
                let holders = inner.holders(&live, &group).await;
                if !holders.is_empty() {
                    if let Some(notes) = inner.fetch(&live, &group, holders).await {
                        inner.merge(&group, notes);
                    }
                }
                let _ = done.send(true);
            });
        }
    }

    fn leave(&self, group: &Group, peer: PeerId) {
        let inner = &self.inner;
        let changed = {
            let mut state = lock(&inner.state);
            if let Some(joined) = state.joined.get_mut(&peer) {
                joined.retain(|g| g != group);
            }
            let Some(local) = state.groups.get_mut(group) else { return };
            let changed = local.roster.leave(peer);
            if local.roster.members.is_empty() && local.empty_since.is_none() {
                local.empty_since = Some(Instant::now());
            }
            if changed {
                inner.changed(&mut state, Change::Leave(group.clone(), peer));
            }
            changed
        };
        if changed {
            inner.presence_changed();
        }
    }

    fn publish(&self, group: &Group, note: Note) -> Result<(), Undeliverable> {
        let inner = &self.inner;
        let recipients = {
            let mut state = lock(&inner.state);
            let State { peers, groups, .. } = &mut *state;
            match groups.get_mut(group) {
                Some(local) => {
                    local.roster.keep(&note);
                    recipients(&local.roster.members, peers)
                }
                None => Vec::new(),
            }
        };
        fan_out(&recipients, &note);
        let Some(live) = inner.up_live() else {
            bump(&inner.counters.unpublished);
            return Err(Undeliverable::Unavailable);
        };
        let msg = Msg::Note { origin: inner.iid, group: Some(group.clone()), note }.encode();
        if inner.send(&live, inner.group_channel(group), msg) {
            Ok(())
        } else {
            Err(Undeliverable::Unavailable)
        }
    }

    fn broadcast(&self, note: Note) -> Result<(), Undeliverable> {
        let inner = &self.inner;
        fan_out(&everyone(&lock(&inner.state).peers), &note);
        let Some(live) = inner.up_live() else {
            bump(&inner.counters.unpublished);
            return Err(Undeliverable::Unavailable);
        };
        let msg = Msg::Note { origin: inner.iid, group: None, note }.encode();
        if inner.send(&live, inner.all.clone(), msg) {
            Ok(())
        } else {
            Err(Undeliverable::Unavailable)
        }
    }

    fn members(&self, group: &Group) -> Vec<Member> {
        let state = lock(&self.inner.state);
        let local = state.groups.get(group).map(|l| l.roster.members.as_slice()).unwrap_or(&[]);
        local.iter().chain(state.presence.members(group)).cloned().collect()
    }

    fn joined(&self, id: PeerId) -> Vec<Group> {
        lock(&self.inner.state).joined.get(&id).cloned().unwrap_or_default()
    }

    fn groups(&self) -> Vec<(Group, usize)> {
        let state = lock(&self.inner.state);
        let mut counts: HashMap<Group, usize> = HashMap::new();
        for (group, local) in &state.groups {
            if !local.roster.members.is_empty() {
                *counts.entry(group.clone()).or_default() += local.roster.members.len();
            }
        }
        state.presence.count(&mut counts);
        counts.into_iter().collect()
    }

    fn history(&self, group: &Group) -> Fetching {
        let inner = self.inner.clone();
        let group = group.clone();
        let (fetched, live) = {
            let state = lock(&inner.state);
            (state.groups.get(&group).map(|l| l.fetched.clone()), state.live.clone())
        };
        Box::pin(async move {
            match (fetched, live) {
                (Some(mut fetched), _) => {
                    // Hearing of a holder, and asking up to three in turn, each within the
                    // history timeout.
                    let wait = inner.settings.history_timeout * 5;
                    let _ = timeout(wait, fetched.wait_for(|done| *done)).await;
                    let state = lock(&inner.state);
                    state.groups.get(&group).map(|l| l.roster.kept.iter().cloned().collect())
                }
                // No member here: ask an instance that has members.
                (None, Some(live)) => {
                    let holders = inner.holders(&live, &group).await;
                    if holders.is_empty() {
                        None
                    } else {
                        inner.fetch(&live, &group, holders).await
                    }
                }
                (None, None) => None,
            }
            .unwrap_or_default()
        })
    }

    fn state(&self) -> watch::Receiver<BusState> {
        self.inner.bus_state.subscribe()
    }

    fn figures(&self) -> Vec<(&'static str, u64)> {
        let m = self.metrics();
        let micros = |d: Option<Duration>| d.map_or(0, |d| d.as_micros() as u64);
        vec![
            ("up", u64::from(m.up)),
            ("reconnects", m.reconnects),
            ("recoveries", m.recoveries),
            ("dropped_malformed", m.dropped.malformed),
            ("dropped_overflow", m.dropped.overflow),
            ("dropped_unpublished", m.dropped.unpublished),
            ("relays_delivered", m.relays.delivered),
            ("relays_full", m.relays.full),
            ("relays_unknown", m.relays.unknown),
            ("relays_unavailable", m.relays.unavailable),
            ("relays_timeout", m.relays.timeout),
            ("relay_p50_us", micros(m.relay_p50)),
            ("relay_p99_us", micros(m.relay_p99)),
            ("subscribed", m.subscribed as u64),
            ("instances", m.instances as u64),
        ]
    }

    fn leave_cluster(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.shutdown())
    }
}

/// Where the supervisor's new sessions come from.
pub(crate) fn incoming_queue(inner: &Inner) -> (mpsc::Sender<Incoming>, mpsc::Receiver<Incoming>) {
    mpsc::channel(inner.settings.incoming_queue)
}
