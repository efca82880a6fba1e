//! The demo's chat: rooms and names over gotalk, for pages and TCP peers alike, on one server or
//! on several behind a load balancer.
//!
//! Operations (JSON in and out), on the same [`Handlers`] as the other demo operations, so a
//! program over TCP reaches them as a page does:
//! - `chat.join` `{"room", "name"?}` → the room's members and history, and the room list;
//! - `chat.say` `{"room"?, "text", "name"?}` → the message; as a notification too, so
//!   `gotalk notify … chat.say '{"text":"hi"}'` posts to the lobby. Saying in a room joins it;
//! - `chat.leave` `{"room"}`, `chat.rename` `{"name"}`, `chat.rooms`, and `chat.rtt`, which
//!   measures the caller's round trip now.
//!
//! A room is a [group](gotalk::relay::Group) of the gateway's relay, so the chat works across
//! the instances of a cluster (`gotalk serve --redis URL`) as on one process: who is in a room
//! and the room list are the relay's [`members`](Relay::members) and
//! [`groups`](Relay::groups) (each member described by a small JSON: its name, transport and
//! round trip), and a room's history is what its group keeps ([`Relay::history`]). This
//! instance keeps only its own members: their names, rooms and rate limits.
//!
//! Members hear `chat.message`, `chat.members` and `chat.rooms` notifications, `chat.you`
//! (their id, name and round trip), and `chat.resync`. Each line of a room's feed
//! (`chat.message`) is published to the room's group and reaches every member's connection
//! through its bounded relay queue, in order; a member too far behind is disconnected by the
//! relay. The others are states, of which only the latest counts: a member is sent each at
//! most once every [`STATE_EVERY`], the newest by then, when the relay's presence count says a
//! group changed anywhere, so however often someone joins and leaves, what waits for a member
//! is one room list and one member list per room it is in. When the bus between instances
//! comes back after an outage, lines published meanwhile on other instances were lost to this
//! one: every member is sent fresh lists and `chat.resync`, on which a page fetches its room's
//! history again.
//!
//! The server also calls the page: a new WebSocket peer is sent `chat.ping`, timed (and again
//! every [`PING_EVERY`]); one that answers is a chat page, so it is asked `chat.name` with a
//! suggested name and renamed to its answer (at once: a page with no name yet takes the
//! suggestion, and renames itself once its user has chosen). A peer is a member from its
//! first chat operation (or its first answered ping) until its connection closes. The rules
//! and limits are in [`rooms`], free of I/O, and what a name may be in [`names`].
//!
//! Names are taken in NFKC, trimmed, and refused when they hold controls, bidirectional
//! controls, zero-width, format or other invisible characters, or mix scripts; two names are
//! the same when they are equal ignoring case, and a name is unique within each room: a join
//! or a rename that would give a room two `alice`s is refused with `name "alice" is taken in
//! room "lobby": choose another`. Every refusal of a name begins with `name`, so the page can
//! tell it from a refused room and ask its user for another. A connection's automatic name
//! (`guest-7`, `tcp-12`) is its alone on its instance.
//!
//! A page presents a secret it keeps for its tab (`secret` in `chat.join`, `chat.rename`,
//! `chat.say` and its answer to `chat.name`; 16 to 128 bytes), and the chat shares only its
//! SHA-256 with the other instances, in the member's group description, never in what pages
//! are sent. Rows that carry the same hash are one person: when a page's instance dies, its
//! rows linger on the others until they expire, and the page, back through the load balancer
//! on another instance, takes its name back at once; meanwhile the member lists show it once,
//! as its newest row. Two tabs share a secret only when one was duplicated from the other.
//!
//! Limits, each a `gotalk serve` flag (defaults in brackets): a name's characters
//! (`--chat-name-chars` [32]), a room name's (`--chat-room-chars` [24]), a message's
//! (`--chat-text-chars` [1000]), rooms at once, the lobby included (`--chat-rooms` [32]),
//! messages each room keeps (`--chat-history` [100], at most 1000), joins and leaves per member
//! per minute, as a burst or spread out (`--chat-room-changes` [60]), and rooms one member may
//! be in (`--chat-rooms-per-member` [8]). Each refusal is an ErrorResult that says which.
//!
//! In a cluster, the rules on rooms and names are checked against what this instance knows
//! of the others, which lags by the time a change takes to cross the bus: two instances may
//! each admit the same name to one room, or a room past the rooms limit, at the same instant.
//! Two instances' connections may have the same automatic name, so a guest that keeps it may
//! find it taken in a room. The rate limits and rooms per member are each member's own, kept
//! by its instance, and exact.
//!
//! Each member comes with its connection's relay id (`peer`), so pages send each other direct
//! messages through the gateway's relay (topic `chat.dm`), on whichever instance each is: the
//! chat neither sees nor keeps them. The relay id is also what tells members apart across
//! instances: connection ids (`id`, `from`) and line numbers (`seq`) are each instance's own.

mod names;
mod rooms;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gotalk::relay::{BusState, Relay};
use gotalk::{HandlerError, Handlers, Sock, TransportKind};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

pub(crate) use rooms::Limits;
use rooms::{ChatError, ConnId, Effect, MemberInfo, Owner, RoomInfo, Rooms, LOBBY};

/// How often the server measures a page's round trip.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(15);
/// How long a page may take to answer `chat.ping`.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a page may take to answer `chat.name`. It answers at once (and lets its user
/// rename later): a request held open would hold up a graceful end of the connection.
const NAME_TIMEOUT: Duration = Duration::from_secs(10);
/// The least time between two sends of a member's states (member lists, the room list, its
/// own `chat.you`); the changes in between reach it as one, the latest.
const STATE_EVERY: Duration = Duration::from_millis(200);

/// The chat's limits on the command line; each left out keeps its default.
#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// The longest chat name, in characters [default: 32].
    #[arg(long, value_name = "N")]
    chat_name_chars: Option<usize>,
    /// The longest chat room name, in characters, and at most 59 bytes [default: 24].
    #[arg(long, value_name = "N")]
    chat_room_chars: Option<usize>,
    /// The longest chat message, in characters [default: 1000].
    #[arg(long, value_name = "N")]
    chat_text_chars: Option<usize>,
    /// How many chat rooms may exist at once, the lobby included [default: 32].
    #[arg(long, value_name = "N")]
    chat_rooms: Option<usize>,
    /// How many messages each chat room keeps for newcomers, at most 1000 [default: 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(..=1000))]
    chat_history: Option<u16>,
    /// How many chat joins and leaves one member may make per minute, in a burst or spread
    /// out [default: 60].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    chat_room_changes: Option<u32>,
    /// How many chat rooms one member may be in at once [default: 8].
    #[arg(long, value_name = "N")]
    chat_rooms_per_member: Option<usize>,
}

impl ChatArgs {
    /// The limits these arguments give.
    pub(crate) fn limits(&self) -> Limits {
        let mut limits = Limits::default();
        if let Some(n) = self.chat_name_chars {
            limits = limits.name_chars(n);
        }
        if let Some(n) = self.chat_room_chars {
            limits = limits.room_chars(n);
        }
        if let Some(n) = self.chat_text_chars {
            limits = limits.text_chars(n);
        }
        if let Some(n) = self.chat_rooms {
            limits = limits.rooms(n);
        }
        if let Some(n) = self.chat_history {
            limits = limits.history(usize::from(n));
        }
        if let Some(n) = self.chat_room_changes {
            limits = limits.room_changes(n as usize);
        }
        if let Some(n) = self.chat_rooms_per_member {
            limits = limits.rooms_per_member(n);
        }
        limits
    }
}

/// The chat: shared by every connection of every transport. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Chat {
    inner: Arc<Inner>,
}

struct Inner {
    relay: Relay,
    /// The bus's state, for the presence count the cached lists were made at.
    bus: watch::Receiver<BusState>,
    state: Mutex<State>,
    lists: Mutex<Lists>,
}

struct State {
    rooms: Rooms,
    /// Each member's connection, and what waits for it.
    seats: HashMap<ConnId, Seat>,
}

/// A member's connection, and the wake-up of the task that sends it its states ([`deliver`]).
struct Seat {
    sock: Sock,
    /// Its `chat.you` changed since it was last sent.
    you: bool,
    wake: Arc<Notify>,
}

/// The latest room list and member lists, each encoded once for every member that is sent
/// it, as of one presence count.
#[derive(Default)]
struct Lists {
    presence: u64,
    rooms: Option<Bytes>,
    members: HashMap<String, Bytes>,
}

/// A state a member is shown, of which only the latest matters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum StateKey {
    /// `chat.members` of one room.
    Members(String),
    /// `chat.rooms`.
    Rooms,
}

/// `chat.members`: a room's members.
#[derive(Serialize)]
struct MembersNote<'a> {
    room: &'a str,
    members: Vec<MemberInfo>,
}

/// `chat.rooms`: every room.
#[derive(Serialize)]
struct RoomsNote {
    rooms: Vec<RoomInfo>,
}

#[derive(Deserialize)]
struct JoinIn {
    room: String,
    #[serde(default)]
    name: Option<String>,
    /// The secret the page keeps for its tab ([`Owner`]).
    #[serde(default)]
    secret: Option<String>,
}

#[derive(Deserialize)]
struct SayIn {
    #[serde(default = "lobby")]
    room: String,
    text: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    secret: Option<String>,
}

fn lobby() -> String {
    LOBBY.to_owned()
}

#[derive(Deserialize)]
struct LeaveIn {
    room: String,
}

#[derive(Deserialize)]
struct RenameIn {
    name: String,
    #[serde(default)]
    secret: Option<String>,
}

/// `chat.name`'s question to a page.
#[derive(Serialize)]
struct NameAsk<'a> {
    suggestion: &'a str,
    max_chars: usize,
}

/// A page's answer to `chat.name`.
#[derive(Deserialize)]
struct NameAnswer {
    name: String,
    #[serde(default)]
    secret: Option<String>,
}

#[derive(Serialize)]
struct Rtt {
    rtt_ms: f64,
}

/// Removes its member from the chat when the connection's transport shuts down (see
/// [`Sock::attach`]). Unlike an `on_close` hook, attaching checks under the connection's own
/// lock whether it has already closed, so a chat operation racing the close cannot leave a
/// member behind.
struct Membership {
    chat: Weak<Inner>,
    id: ConnId,
}

/// A connection that has just become a member, until [`stay`](Self::stay) ties the membership
/// to it.
#[must_use = "call stay() once the operation is done, or the member is removed at once"]
struct Entered(Option<Membership>);

impl Entered {
    /// Keeps the member for as long as the connection lives. Outside the chat's lock: on a
    /// connection already closed, the membership is dropped at once and takes the lock to
    /// remove the member again.
    fn stay(self, sock: &Sock) {
        if let Some(membership) = self.0 {
            sock.attach(membership);
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(inner) = self.chat.upgrade() {
            let mut state = inner.lock();
            let effects = state.rooms.disconnect(self.id, now_ms());
            state.apply(&inner.relay, self.id, effects);
            if let Some(seat) = state.seats.remove(&self.id) {
                seat.wake.notify_one();
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn encode(value: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

impl State {
    /// Does what a change of member `id` asks of the relay: its groups, and the lines
    /// published to them. Under the chat's lock, so the groups change in the order this
    /// instance's rules saw; the relay never waits on the bus here.
    fn apply(&self, relay: &Relay, id: ConnId, effects: Vec<Effect>) {
        let Some(seat) = self.seats.get(&id) else { return };
        let sock = &seat.sock;
        for effect in effects {
            match effect {
                Effect::Join(room) => {
                    let (Some(group), Some(meta)) = (rooms::group(&room), self.rooms.meta(id))
                    else {
                        continue;
                    };
                    // Refused only for a connection that has closed meanwhile, which its
                    // membership's end takes out of the chat.
                    if let Err(e) = relay.join(sock, &group, meta) {
                        tracing::debug!(id, "chat: not put in {room:?}: {e}");
                    }
                }
                Effect::Leave(room) => {
                    if let Some(group) = rooms::group(&room) {
                        relay.leave(sock, &group);
                    }
                }
                Effect::Line { message, others } => {
                    let Some(group) = rooms::group(&message.room) else { continue };
                    let except = if others { sock.relay_id() } else { None };
                    let Some(note) = rooms::note(&message, except, self.rooms.history()) else {
                        continue;
                    };
                    if relay.publish(&group, note).is_err() {
                        tracing::info!(
                            "chat: a line in {:?} reached this instance only: the bus is down",
                            message.room
                        );
                    }
                }
            }
        }
    }

    /// Has `chat.you` sent to `id` again: who the server thinks it is.
    fn tell_you(&mut self, id: ConnId) {
        if let Some(seat) = self.seats.get_mut(&id) {
            seat.you = true;
            seat.wake.notify_one();
        }
    }
}

impl Chat {
    /// The chat, with its rooms in `relay`'s groups: the relay every connection is served
    /// with.
    pub(crate) fn new(limits: Limits, relay: Relay) -> Self {
        let state = State { rooms: Rooms::new(limits), seats: HashMap::new() };
        let bus = relay.state();
        let inner = Inner { relay, bus, state: Mutex::new(state), lists: Mutex::default() };
        Chat { inner: Arc::new(inner) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }

    fn relay(&self) -> &Relay {
        &self.inner.relay
    }

    /// Makes `sock` a member, named `name` if given (else by its automatic name: `guest-<id>`
    /// for a page, `tcp-<id>` and so on for a program), or renames it to `name` if it was one
    /// already.
    ///
    /// A page presents its `secret` ([`Owner`]) with it: the first a connection presents
    /// is the one it keeps, and with it the page takes back a name its earlier connection
    /// still holds in a room.
    ///
    /// The caller finishes its operation, then calls [`Entered::stay`]: a program that says
    /// something and hangs up at once has its message posted before it leaves.
    fn enter(
        &self,
        sock: &Sock,
        name: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Entered, ChatError> {
        let id = sock.info().id;
        let transport = sock.info().transport.to_string();
        let now = now_ms();
        let relay = self.relay();
        let owner = secret.map(Owner::of).transpose()?;
        let mut state = self.lock();
        let name = name.map(|n| state.rooms.check_name(id, &transport, n)).transpose()?;
        if state.rooms.contains(id) {
            if let Some(owner) = owner {
                let effects = state.rooms.own(id, owner);
                state.apply(relay, id, effects);
            }
            if let Some(name) = name {
                let (_, effects) = state.rooms.rename_to(id, name, now, relay)?;
                state.apply(relay, id, effects);
                state.tell_you(id);
            }
            return Ok(Entered(None));
        }
        // The relay id is the page's address for direct messages (`chat.dm`, relayed page
        // to page without the chat's help), and what puts it in rooms.
        state.rooms.connect(id, transport, sock.relay_id(), now);
        if let Some(owner) = owner {
            // In no room yet: nothing to describe again.
            let _ = state.rooms.own(id, owner);
        }
        if let Some(name) = name {
            // In no room yet, so no one else's name is in the way; undone if it is.
            if let Err(e) = state.rooms.rename_to(id, name, now, relay) {
                state.rooms.disconnect(id, now);
                return Err(e);
            }
        }
        let wake = Arc::new(Notify::new());
        state.seats.insert(id, Seat { sock: sock.clone(), you: false, wake: wake.clone() });
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(deliver(weak.clone(), id, sock.clone(), wake, relay.state()));
        Ok(Entered(Some(Membership { chat: weak, id })))
    }

    async fn join(&self, sock: &Sock, input: JoinIn) -> Result<rooms::Joined, ChatError> {
        let entered = self.enter(sock, input.name.as_deref(), input.secret.as_deref())?;
        let joined = self.join_room(sock, &input.room).await;
        entered.stay(sock);
        joined
    }

    /// Puts the member in `room`, and answers with what it needs to show the room: the
    /// history from the room's group, fetched once the member is in it, so nothing said
    /// meanwhile falls between the history and the lines the member now receives (a line in
    /// both is the same `peer` and `seq`).
    async fn join_room(&self, sock: &Sock, room: &str) -> Result<rooms::Joined, ChatError> {
        let id = sock.info().id;
        let relay = self.relay();
        let room = {
            let mut state = self.lock();
            let (room, effects) = state.rooms.join(id, room, now_ms(), relay)?;
            state.apply(relay, id, effects);
            room
        };
        let kept = match rooms::group(&room) {
            Some(group) => relay.history(&group).await,
            None => Vec::new(),
        };
        self.lock().rooms.joined(id, room, relay, rooms::lines(&kept))
    }

    fn say(&self, sock: &Sock, input: SayIn) -> Result<rooms::Message, ChatError> {
        let entered = self.enter(sock, input.name.as_deref(), input.secret.as_deref())?;
        let id = sock.info().id;
        let relay = self.relay();
        let said = {
            let mut state = self.lock();
            let said = state.rooms.say(id, &input.room, &input.text, now_ms(), relay);
            said.map(|(message, effects)| {
                state.apply(relay, id, effects);
                message
            })
        };
        entered.stay(sock);
        said
    }

    fn leave(&self, sock: &Sock, input: LeaveIn) -> Result<(), ChatError> {
        let id = sock.info().id;
        let mut state = self.lock();
        let effects = state.rooms.leave(id, &input.room, now_ms())?;
        state.apply(self.relay(), id, effects);
        Ok(())
    }

    fn rename(&self, sock: &Sock, input: RenameIn) -> Result<MemberInfo, ChatError> {
        let entered = self.enter(sock, Some(&input.name), input.secret.as_deref())?;
        let member = self.lock().rooms.member(sock.info().id);
        entered.stay(sock);
        member.ok_or_else(|| ChatError::BadName(names::refusal("belongs to members only")))
    }

    /// Times a `chat.ping` to `sock`, in milliseconds, and records it if `sock` is a member.
    async fn ping(&self, sock: &Sock) -> Result<f64, String> {
        let start = Instant::now();
        let ping = sock.request::<_, serde_json::Value>("chat.ping", &());
        match tokio::time::timeout(PING_TIMEOUT, ping).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no answer to chat.ping within {PING_TIMEOUT:?}")),
        }
        // To a tenth of a millisecond: finer would be noise.
        let rtt_ms = (start.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
        let id = sock.info().id;
        let mut state = self.lock();
        let effects = state.rooms.set_rtt(id, rtt_ms);
        state.apply(self.relay(), id, effects);
        state.tell_you(id);
        Ok(rtt_ms)
    }

    /// What a new connection gets: a page that answers `chat.ping` becomes a member, is asked
    /// its name, and has its round trip measured every [`PING_EVERY`] while it stays.
    pub(crate) fn on_connect(&self, sock: Sock) -> impl Future<Output = ()> + Send + 'static {
        let chat = self.clone();
        async move {
            // Programs over TCP cannot answer; they take part by calling the operations.
            if sock.info().transport != TransportKind::WebSocket {
                return;
            }
            // Not a chat page (a test's own connection, a program over WebSocket).
            if chat.ping(&sock).await.is_err() {
                return;
            }
            // Kept for as long as the connection lives: dropped here, the membership would
            // remove the page again, from any room its own `chat.join` put it in meanwhile.
            match chat.enter(&sock, None, None) {
                Ok(entered) => entered.stay(&sock),
                Err(_) => return,
            }
            // The ping is repeated now that the page is a member, so `chat.you` carries it.
            let _ = chat.ping(&sock).await;
            tokio::join!(chat.ask_name(&sock), chat.keep_measuring(&sock));
        }
    }

    async fn ask_name(&self, sock: &Sock) {
        let id = sock.info().id;
        let (suggestion, max_chars) = {
            let state = self.lock();
            let Some(member) = state.rooms.member(id) else { return };
            (member.name, state.rooms.max_name_chars())
        };
        let question = NameAsk { suggestion: &suggestion, max_chars };
        let ask = sock.request::<_, NameAnswer>("chat.name", &question);
        let answer = tokio::select! {
            answer = tokio::time::timeout(NAME_TIMEOUT, ask) => answer,
            _ = sock.closed() => return,
        };
        match answer {
            Ok(Ok(NameAnswer { name, secret })) => {
                match self.enter(sock, Some(&name), secret.as_deref()) {
                    Ok(entered) => entered.stay(sock),
                    Err(e) => {
                        tracing::info!(id, "chat: the page's name {name:?} was refused: {e}");
                        self.lock().tell_you(id);
                    }
                }
            }
            Ok(Err(e)) => tracing::info!(id, "chat: no name from the page: {e}"),
            Err(_) => tracing::info!(id, "chat: no name from the page within {NAME_TIMEOUT:?}"),
        }
    }

    async fn keep_measuring(&self, sock: &Sock) {
        loop {
            tokio::select! {
                _ = sock.closed() => return,
                _ = tokio::time::sleep(PING_EVERY) => {}
            }
            if self.ping(sock).await.is_err() {
                return;
            }
        }
    }

    /// Registers the chat's operations on `handlers`.
    pub(crate) fn register(&self, handlers: &mut Handlers) {
        let chat = self.clone();
        handlers.handle("chat.join", move |sock, input: JoinIn| {
            let chat = chat.clone();
            async move { chat.join(&sock, input).await.map_err(|e| HandlerError::text(e.to_string())) }
        });
        let chat = self.clone();
        handlers.handle("chat.say", move |sock, input: SayIn| {
            let chat = chat.clone();
            async move { chat.say(&sock, input).map_err(|e| HandlerError::text(e.to_string())) }
        });
        let chat = self.clone();
        handlers.handle_notification("chat.say", move |sock, input: SayIn| {
            let chat = chat.clone();
            async move {
                // A notification has no answer to carry the error; the log does.
                if let Err(e) = chat.say(&sock, input) {
                    tracing::info!(id = sock.info().id, "chat.say notification refused: {e}");
                }
            }
        });
        let chat = self.clone();
        handlers.handle("chat.leave", move |sock, input: LeaveIn| {
            let chat = chat.clone();
            async move { chat.leave(&sock, input).map_err(|e| HandlerError::text(e.to_string())) }
        });
        let chat = self.clone();
        handlers.handle("chat.rename", move |sock, input: RenameIn| {
            let chat = chat.clone();
            async move { chat.rename(&sock, input).map_err(|e| HandlerError::text(e.to_string())) }
        });
        let chat = self.clone();
        handlers.handle("chat.rooms", move |_sock, _: serde_json::Value| {
            let rooms = rooms::room_list(chat.relay());
            async move { Ok::<_, String>(rooms) }
        });
        let chat = self.clone();
        handlers.handle("chat.rtt", move |sock, _: serde_json::Value| {
            let chat = chat.clone();
            async move {
                chat.ping(&sock).await.map(|rtt_ms| Rtt { rtt_ms }).map_err(HandlerError::text)
            }
        });
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The room list and the member lists of `rooms`, as of now; each made and encoded once
    /// per presence count, whichever member asks first.
    fn lists(&self, rooms: &[String]) -> (Bytes, Vec<(String, Bytes)>) {
        let presence = self.bus.borrow().presence;
        let mut lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        if lists.presence != presence {
            *lists = Lists { presence, ..Lists::default() };
        }
        let relay = &self.relay;
        let room_list = lists
            .rooms
            .get_or_insert_with(|| encode(&RoomsNote { rooms: rooms::room_list(relay) }));
        let room_list = room_list.clone();
        let members = rooms
            .iter()
            .map(|room| {
                let payload = lists.members.entry(room.clone()).or_insert_with(|| {
                    encode(&MembersNote { room, members: rooms::members_of(relay, room) })
                });
                (room.clone(), payload.clone())
            })
            .collect();
        (room_list, members)
    }

    /// The states to send member `id` now: its rooms' member lists and the room list when
    /// `lists`, each unless it is what was sent last (`sent` holds a hash of each), its
    /// `chat.you` when asked for, and `chat.resync` when `resync`. `None` once it is no
    /// member.
    fn states(
        &self,
        id: ConnId,
        lists: bool,
        resync: bool,
        sent: &mut HashMap<StateKey, u64>,
    ) -> Option<Vec<(&'static str, Bytes)>> {
        let (you, rooms) = {
            let mut state = self.lock();
            let seat = state.seats.get_mut(&id)?;
            let you = std::mem::take(&mut seat.you);
            (you.then(|| state.rooms.member(id)).flatten(), state.rooms.rooms_of(id))
        };
        let mut states = Vec::new();
        let mut send = |key: StateKey, name: &'static str, payload: Bytes| {
            let mut hasher = DefaultHasher::new();
            payload.hash(&mut hasher);
            let hash = hasher.finish();
            if sent.insert(key, hash) != Some(hash) {
                states.push((name, payload));
            }
        };
        if lists {
            let (room_list, members) = self.lists(&rooms);
            for (room, payload) in members {
                send(StateKey::Members(room), "chat.members", payload);
            }
            send(StateKey::Rooms, "chat.rooms", room_list);
        }
        if let Some(you) = you {
            // Sent even when unchanged: it is asked for when a page's own idea of its name
            // may be wrong (the name it answered was refused).
            states.push(("chat.you", encode(&you)));
        }
        if resync {
            states.push(("chat.resync", Bytes::from_static(b"{}")));
        }
        // The lists of rooms the member has left are not its business any more.
        sent.retain(|key, _| match key {
            StateKey::Members(room) => rooms.contains(room),
            StateKey::Rooms => true,
        });
        Some(states)
    }
}

/// Sends member `id` its states until it is no member (it left) or its connection closes: at
/// most once every [`STATE_EVERY`], each the latest. A change to any group anywhere (the
/// bus's presence count) has its lists sent again; the bus's return (its recoveries count),
/// fresh lists and `chat.resync`. A connection that reads slowly holds this task in
/// `buffer_notify`, and meanwhile changes are only noted, not piled up.
async fn deliver(
    chat: Weak<Inner>,
    id: ConnId,
    sock: Sock,
    wake: Arc<Notify>,
    mut bus: watch::Receiver<BusState>,
) {
    let mut recoveries = bus.borrow_and_update().recoveries;
    let mut sent = HashMap::new();
    let (mut lists, mut resync, mut dirty, mut watching) = (false, false, false, true);
    let mut due = tokio::time::Instant::now();
    loop {
        if dirty && tokio::time::Instant::now() >= due {
            dirty = false;
            // Read without marking the state seen: a presence change that came with it (a
            // rename, a join) is for `bus.changed()` below to see, or its lists never go.
            let now = bus.borrow().recoveries;
            if now != recoveries {
                recoveries = now;
                (lists, resync) = (true, true);
                sent.clear();
            }
            let states = {
                let Some(inner) = chat.upgrade() else { return };
                let Some(states) = inner.states(id, lists, resync, &mut sent) else { return };
                states
            };
            (lists, resync) = (false, false);
            if states.is_empty() {
                continue;
            }
            due = tokio::time::Instant::now() + STATE_EVERY;
            for (name, payload) in states {
                if sock.buffer_notify(name, payload).await.is_err() {
                    return;
                }
            }
            continue;
        }
        tokio::select! {
            _ = wake.notified() => dirty = true,
            // Once lists are due anyway, further changes are read when they are sent.
            changed = bus.changed(), if watching && !lists => match changed {
                Ok(()) => (lists, dirty) = (true, true),
                Err(_) => watching = false,
            },
            _ = tokio::time::sleep_until(due), if dirty => {}
            _ = sock.closed() => return,
        }
    }
}
