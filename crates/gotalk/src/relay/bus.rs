//! Where the registry of peers, the groups and the delivery between them live: the [`Bus`]
//! interface, and [`LocalBus`], its implementation for one process.
//!
//! A gateway instance registers each of its connections' mailboxes and asks the bus to
//! deliver to an id or to publish to a group. With one process, the bus is a map. With several
//! processes behind a load balancer, an implementation over a message bus (Redis pub/sub,
//! NATS; the crate `gotalk-cluster`) carries deliveries and group messages between them and
//! tells each instance who is in which group. Nothing else in the relay knows which it is
//! talking to.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use gotalk_protocol::relay::PeerId;
use tokio::sync::watch;

use super::group::{Group, Member, Note};
use super::mailbox::{Mailbox, Refused};
use super::resume::Sessions;
use gotalk_protocol::session::Secret;

/// Why a bus did not deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Undeliverable {
    /// No live peer has the id.
    UnknownPeer,
    /// The recipient's queue is full; the sender may retry.
    QueueFull,
    /// The message went nowhere: the bus between instances is down, or too much is on its
    /// way already. Safe to retry.
    Unavailable,
    /// The bus took the message, but the recipient's instance did not answer in time: it may
    /// have been delivered, so a retry may deliver it twice.
    Timeout,
}

/// A delivery in progress, as a bus returns it: the message has been handed over, and the
/// future tells what became of it.
pub type Delivering = Pin<Box<dyn Future<Output = Result<(), Undeliverable>> + Send>>;

/// A registration in progress: done once the id is reachable from every instance.
pub type Registering = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A session's handover from another instance in progress: true once the session is this
/// instance's.
pub type Resuming = Pin<Box<dyn Future<Output = bool> + Send>>;

/// A group's kept messages, oldest first, as a bus fetches them.
pub type Fetching = Pin<Box<dyn Future<Output = Vec<Note>> + Send>>;

/// What a bus reports about itself, watched with [`Bus::state`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusState {
    /// The bus between instances is up (always, for one process). While it is down,
    /// deliveries to other instances answer [`Undeliverable::Unavailable`] and this instance
    /// sees only its own members.
    pub up: bool,
    /// Counts changes to the members of any group, here or anywhere in the cluster.
    pub presence: u64,
    /// Counts the times the bus came back after being down. What other instances published
    /// meanwhile was lost: an application that shows group state fetches it again.
    pub recoveries: u64,
}

/// The registry of peers and groups, and the delivery between them.
///
/// `register` and `unregister` are called exactly once per connection, when it opens and when
/// it starts closing. Every method is called on a connection's own tasks and must not block:
/// `deliver` and `publish` hand the message over before they return, so messages from one
/// sender keep their order, and an implementation over the network answers from a task of
/// its own.
pub trait Bus: Send + Sync + 'static {
    /// Makes `id` reachable: deliveries to it go into `mailbox`. Deliveries from this process
    /// reach it at once; the future completes when every instance can reach it.
    fn register(&self, id: PeerId, mailbox: Mailbox) -> Registering;
    /// Makes `id` unreachable and takes it out of every group.
    fn unregister(&self, id: PeerId);
    /// Queues `payload` (an encoded delivery) for the peer `to`.
    fn deliver(&self, to: PeerId, payload: Bytes) -> Delivering;
    /// How many peers this process has registered.
    fn local_peers(&self) -> usize;
    /// Puts `member` (a peer registered here) in `group`, or updates its description.
    fn join(&self, group: &Group, member: Member);
    /// Takes `peer` out of `group`.
    fn leave(&self, group: &Group, peer: PeerId);
    /// Sends `note` to every member of `group`, wherever it is connected: at most once, with
    /// no answer. A member whose queue is full is disconnected.
    ///
    /// # Errors
    /// [`Undeliverable::Unavailable`] when it could not go to the other instances (members
    /// here have it anyway).
    fn publish(&self, group: &Group, note: Note) -> Result<(), Undeliverable>;
    /// Sends `note` to every registered peer of every instance, as [`publish`](Self::publish).
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    fn broadcast(&self, note: Note) -> Result<(), Undeliverable>;
    /// Who is in `group`, across the cluster, in the order they joined on each instance.
    fn members(&self, group: &Group) -> Vec<Member>;
    /// The groups that have members, with how many.
    fn groups(&self) -> Vec<(Group, usize)>;
    /// The groups the peer `id`, registered here, is in: what a connection that resumes its
    /// session counts against [`Relay::max_groups`](super::Relay::max_groups). A bus that
    /// keeps no such list says none, and a resumed connection then starts counting afresh.
    fn joined(&self, id: PeerId) -> Vec<Group> {
        let _ = id;
        Vec::new()
    }
    /// The messages `group` keeps for newcomers (see [`Note::keep`]), oldest first.
    fn history(&self, group: &Group) -> Fetching;
    /// The bus's state, to watch for changes.
    ///
    /// Do not hold what [`borrow`](watch::Receiver::borrow) or
    /// [`wait_for`](watch::Receiver::wait_for) return across an await or any long work: the
    /// guard holds the state's lock, and whatever updates the state (a member joining here or
    /// elsewhere, the bus going down or coming back) blocks its thread until the guard is
    /// dropped; a join made while the same task holds one never returns. Copy what you need
    /// out of it and drop it:
    ///
    /// ```
    /// # async fn demo(bus: &dyn gotalk::relay::Bus) {
    /// let mut state = bus.state();
    /// let recoveries = state.borrow().recoveries; // the guard ends with the statement
    /// // `wait_for`'s guard, dropped at once: only whether it came matters here.
    /// let back = state.wait_for(|s| s.recoveries > recoveries).await.is_ok();
    /// # let _ = back;
    /// # }
    /// ```
    fn state(&self) -> watch::Receiver<BusState>;

    /// What the bus reports for monitoring: counters and gauges by name (`up`,
    /// `reconnects`, …), none for one process.
    fn figures(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// The sessions of this process's connections, live and held for peers that went away,
    /// when the bus keeps them (see [`Relay::resume_grace`](super::Relay::resume_grace)).
    /// None: no session is ever kept.
    fn sessions(&self) -> Option<&Sessions> {
        None
    }

    /// Takes over the session `id` that another instance holds, if `secret` is its own:
    /// once the future is true, `id` is registered here with `mailbox`, holding what was
    /// sent to the session until now in its order, and is in the session's groups. False
    /// for anything else: a wrong secret, a session nobody holds, a bus that cannot ask
    /// (this one, by default). The relay asks only for sessions its own
    /// [`sessions`](Self::sessions) do not hold.
    fn resume(&self, id: PeerId, secret: Secret, mailbox: Mailbox) -> Resuming {
        let _ = (id, secret, mailbox);
        Box::pin(std::future::ready(false))
    }

    /// Leaves the other instances at shutdown, so they forget this one's members at once
    /// rather than when it stops answering. Local delivery keeps working.
    fn leave_cluster(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
}

/// Puts `note` in `mailbox` unless it is addressed around it; a full mailbox overflows.
pub fn push_note(mailbox: &Mailbox, peer: PeerId, note: &Note) -> Result<(), Refused> {
    if note.except == Some(peer) {
        return Ok(());
    }
    mailbox.push_note(note.name.clone(), note.payload.clone())
}

/// Turns a mailbox's refusal into a delivery's outcome.
pub fn undeliverable(refused: Refused) -> Undeliverable {
    match refused {
        Refused::Full => Undeliverable::QueueFull,
        Refused::Closed => Undeliverable::UnknownPeer,
    }
}

/// One group's members and kept messages.
#[derive(Debug, Default, Clone)]
pub struct Roster {
    /// The members, in the order they joined.
    pub members: Vec<Member>,
    /// The kept messages, oldest first.
    pub kept: VecDeque<Note>,
}

impl Roster {
    /// Adds `member`, or updates the description of one already in. True when it changed
    /// anything.
    pub fn join(&mut self, member: Member) -> bool {
        match self.members.iter_mut().find(|m| m.peer == member.peer) {
            Some(m) if m.meta == member.meta => false,
            Some(m) => {
                m.meta = member.meta;
                true
            }
            None => {
                self.members.push(member);
                true
            }
        }
    }

    /// Removes `peer`. True when it was a member.
    pub fn leave(&mut self, peer: PeerId) -> bool {
        let before = self.members.len();
        self.members.retain(|m| m.peer != peer);
        self.members.len() != before
    }

    /// Keeps `note` if it asks to be, dropping the oldest past its count.
    pub fn keep(&mut self, note: &Note) {
        if note.keep == 0 {
            return;
        }
        self.kept.push_back(Note { except: None, ..note.clone() });
        while self.kept.len() > note.keep {
            self.kept.pop_front();
        }
    }
}

/// The bus of one process: maps from id to mailbox and from group to members.
#[derive(Debug)]
pub struct LocalBus {
    inner: Mutex<Local>,
    state: watch::Sender<BusState>,
    sessions: Sessions,
}

#[derive(Debug, Default)]
struct Local {
    peers: HashMap<PeerId, Mailbox>,
    groups: HashMap<Group, Roster>,
    /// The groups each peer is in, so a leaving peer leaves them all in one step.
    joined: HashMap<PeerId, Vec<Group>>,
}

impl Default for LocalBus {
    fn default() -> Self {
        let (state, _) = watch::channel(BusState { up: true, ..BusState::default() });
        LocalBus { inner: Mutex::default(), state, sessions: Sessions::new() }
    }
}

impl LocalBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    // A panic cannot leave the maps half-changed (each section is a few map operations on
    // owned values), so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, Local> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deliver_now(&self, to: PeerId, payload: Bytes) -> Result<(), Undeliverable> {
        let mailbox = self.lock().peers.get(&to).cloned().ok_or(Undeliverable::UnknownPeer)?;
        mailbox.push(payload).map_err(undeliverable)
    }

    fn presence_changed(&self) {
        self.state.send_modify(|s| s.presence += 1);
    }
}

impl Bus for LocalBus {
    fn register(&self, id: PeerId, mailbox: Mailbox) -> Registering {
        if self.lock().peers.insert(id, mailbox).is_some() {
            // 122 random bits make this a broken random source, not bad luck.
            tracing::error!(%id, "relay id registered twice");
        }
        Box::pin(std::future::ready(()))
    }

    fn unregister(&self, id: PeerId) {
        let left = {
            let mut local = self.lock();
            local.peers.remove(&id);
            let groups = local.joined.remove(&id).unwrap_or_default();
            for group in &groups {
                if let Some(roster) = local.groups.get_mut(group) {
                    roster.leave(id);
                    if roster.members.is_empty() {
                        local.groups.remove(group);
                    }
                }
            }
            !groups.is_empty()
        };
        if left {
            self.presence_changed();
        }
    }

    fn deliver(&self, to: PeerId, payload: Bytes) -> Delivering {
        Box::pin(std::future::ready(self.deliver_now(to, payload)))
    }

    fn local_peers(&self) -> usize {
        self.lock().peers.len()
    }

    fn join(&self, group: &Group, member: Member) {
        let changed = {
            let mut local = self.lock();
            if !local.peers.contains_key(&member.peer) {
                return;
            }
            let peer = member.peer;
            let changed = local.groups.entry(group.clone()).or_default().join(member);
            let joined = local.joined.entry(peer).or_default();
            if !joined.contains(group) {
                joined.push(group.clone());
            }
            changed
        };
        if changed {
            self.presence_changed();
        }
    }

    fn joined(&self, id: PeerId) -> Vec<Group> {
        self.lock().joined.get(&id).cloned().unwrap_or_default()
    }

    fn leave(&self, group: &Group, peer: PeerId) {
        let changed = {
            let mut local = self.lock();
            if let Some(joined) = local.joined.get_mut(&peer) {
                joined.retain(|g| g != group);
            }
            let Some(roster) = local.groups.get_mut(group) else { return };
            let changed = roster.leave(peer);
            if roster.members.is_empty() {
                local.groups.remove(group);
            }
            changed
        };
        if changed {
            self.presence_changed();
        }
    }

    fn publish(&self, group: &Group, note: Note) -> Result<(), Undeliverable> {
        let recipients: Vec<(PeerId, Mailbox)> = {
            let mut local = self.lock();
            let Local { peers, groups, .. } = &mut *local;
            let Some(roster) = groups.get_mut(group) else { return Ok(()) };
            roster.keep(&note);
            roster
                .members
                .iter()
                .filter_map(|m| Some((m.peer, peers.get(&m.peer)?.clone())))
                .collect()
        };
        for (peer, mailbox) in recipients {
            let _ = push_note(&mailbox, peer, &note);
        }
        Ok(())
    }

    fn broadcast(&self, note: Note) -> Result<(), Undeliverable> {
        let everyone: Vec<(PeerId, Mailbox)> =
            self.lock().peers.iter().map(|(id, m)| (*id, m.clone())).collect();
        for (peer, mailbox) in everyone {
            let _ = push_note(&mailbox, peer, &note);
        }
        Ok(())
    }

    fn members(&self, group: &Group) -> Vec<Member> {
        self.lock().groups.get(group).map(|r| r.members.clone()).unwrap_or_default()
    }

    fn groups(&self) -> Vec<(Group, usize)> {
        self.lock().groups.iter().map(|(g, r)| (g.clone(), r.members.len())).collect()
    }

    fn history(&self, group: &Group) -> Fetching {
        let kept = self.lock().groups.get(group).map(|r| r.kept.iter().cloned().collect());
        Box::pin(std::future::ready(kept.unwrap_or_default()))
    }

    fn state(&self) -> watch::Receiver<BusState> {
        self.state.subscribe()
    }

    fn sessions(&self) -> Option<&Sessions> {
        Some(&self.sessions)
    }
}
