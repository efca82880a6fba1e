//! The demo's chat: rooms and names over gotalk, for pages and TCP peers alike.
//!
//! Operations (JSON in and out), on the same [`Handlers`] as the other demo operations, so a
//! program over TCP reaches them as a page does:
//! - `chat.join` `{"room", "name"?}` → the room's members and history, and the room list;
//! - `chat.say` `{"room"?, "text", "name"?}` → the message; as a notification too, so
//!   `gotalk notify … chat.say '{"text":"hi"}'` posts to the lobby. Saying in a room joins it;
//! - `chat.leave` `{"room"}`, `chat.rename` `{"name"}`, `chat.rooms`, and `chat.rtt`, which
//!   measures the caller's round trip now.
//!
//! Members hear `chat.message`, `chat.members` and `chat.rooms` notifications, and `chat.you`
//! (their id, name and round trip). Each line of a room's feed (`chat.message`) goes to every
//! member of the room, in order; a member [`QUEUE`] lines behind is disconnected. The others
//! are states, of which only the latest counts: a member is sent each at most once every
//! [`STATE_EVERY`], the newest by then, so however often someone joins and leaves, what waits
//! for a member is one room list and one member list per room it is in.
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
//! (`guest-7`, `tcp-12`) is its alone.
//!
//! Limits, each a `gotalk serve` flag (defaults in brackets): a name's characters
//! (`--chat-name-chars` [32]), a room name's (`--chat-room-chars` [24]), a message's
//! (`--chat-text-chars` [1000]), rooms at once, the lobby included (`--chat-rooms` [32]),
//! messages each room keeps (`--chat-history` [100]), joins and leaves per member per minute,
//! as a burst or spread out (`--chat-room-changes` [60]), and rooms one member may be in
//! (`--chat-rooms-per-member` [8]). Each refusal is an ErrorResult that says which.
//!
//! Each member comes with its connection's relay id (`peer`), so pages send each other direct
//! messages through the gateway's relay (topic `chat.dm`): the chat neither sees nor keeps them.

mod names;
mod rooms;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gotalk::{Handlers, Sock, TransportKind};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub(crate) use rooms::Limits;
use rooms::{ChatError, ConnId, MemberInfo, Note, Outbox, Rooms, LOBBY};

/// How often the server measures a page's round trip.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(15);
/// How long a page may take to answer `chat.ping`.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a page may take to answer `chat.name`. It answers at once (and lets its user
/// rename later): a request held open would hold up a graceful end of the connection.
const NAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of the rooms' feeds waiting for one member's connection. A member that falls this
/// far behind is disconnected rather than let the chat's memory grow.
const QUEUE: usize = 256;
/// The least time between two sends of a member's states (member lists, the room list, its
/// own `chat.you`); the changes in between reach it as one, the latest.
const STATE_EVERY: Duration = Duration::from_millis(200);

/// The chat's limits on the command line; each left out keeps its default.
#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// The longest chat name, in characters [default: 32].
    #[arg(long, value_name = "N")]
    chat_name_chars: Option<usize>,
    /// The longest chat room name, in characters [default: 24].
    #[arg(long, value_name = "N")]
    chat_room_chars: Option<usize>,
    /// The longest chat message, in characters [default: 1000].
    #[arg(long, value_name = "N")]
    chat_text_chars: Option<usize>,
    /// How many chat rooms may exist at once, the lobby included [default: 32].
    #[arg(long, value_name = "N")]
    chat_rooms: Option<usize>,
    /// How many messages each chat room keeps for newcomers [default: 100].
    #[arg(long, value_name = "N")]
    chat_history: Option<usize>,
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
            limits = limits.history(n);
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
    state: Mutex<State>,
}

struct State {
    rooms: Rooms,
    /// What waits for each member's connection.
    queues: HashMap<ConnId, Mailbox>,
}

/// What waits for one member's connection, sent by its own task ([`deliver`]).
struct Mailbox {
    sock: Sock,
    /// `chat.message` payloads, in order: each is news, so none replaces another.
    lines: VecDeque<Bytes>,
    /// The latest unsent payload of each state the member is shown; a newer one replaces it.
    states: BTreeMap<StateKey, Bytes>,
    /// Woken when something is queued, or the mailbox is gone.
    wake: Arc<Notify>,
}

/// A state a member is shown, of which only the latest matters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum StateKey {
    /// `chat.members` of one room.
    Members(String),
    /// `chat.rooms`.
    Rooms,
    /// `chat.you`.
    You,
}

impl StateKey {
    fn notification(&self) -> &'static str {
        match self {
            StateKey::Members(_) => "chat.members",
            StateKey::Rooms => "chat.rooms",
            StateKey::You => "chat.you",
        }
    }
}

#[derive(Deserialize)]
struct JoinIn {
    room: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct SayIn {
    #[serde(default = "lobby")]
    room: String,
    text: String,
    #[serde(default)]
    name: Option<String>,
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
            let chat = Chat { inner };
            let slow = {
                let mut state = chat.lock();
                let outbox = state.rooms.disconnect(self.id, now_ms());
                if let Some(mailbox) = state.queues.remove(&self.id) {
                    mailbox.wake.notify_one();
                }
                state.dispatch(outbox)
            };
            close_slow(slow);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn close_slow(slow: Vec<Sock>) {
    for sock in slow {
        tracing::warn!(id = sock.info().id, "chat member too far behind: disconnected");
        sock.close();
    }
}

impl State {
    /// Queues each note for its members, encoded once for all of them: lines in order, states
    /// in place of older ones. Returns the connections of members whose line queue was full,
    /// to close once the lock is released.
    fn dispatch(&mut self, outbox: Outbox) -> Vec<Sock> {
        let mut slow = Vec::new();
        for (to, note) in outbox {
            let payload = match serde_json::to_vec(&note) {
                Ok(json) => Bytes::from(json),
                Err(e) => {
                    tracing::error!("chat: cannot encode {}: {e}", note.name());
                    continue;
                }
            };
            let state = match note {
                Note::Message(_) => None,
                Note::Members { room, .. } => Some(StateKey::Members(room)),
                Note::Rooms { .. } => Some(StateKey::Rooms),
            };
            for id in to {
                match &state {
                    None => self.send_line(id, payload.clone(), &mut slow),
                    Some(key) => self.set_state(id, key.clone(), payload.clone()),
                }
            }
        }
        slow
    }

    fn send_line(&mut self, id: ConnId, payload: Bytes, slow: &mut Vec<Sock>) {
        let Some(mailbox) = self.queues.get_mut(&id) else { return };
        if mailbox.lines.len() >= QUEUE {
            if !slow.iter().any(|s| s.info().id == id) {
                slow.push(mailbox.sock.clone());
            }
            return;
        }
        mailbox.lines.push_back(payload);
        mailbox.wake.notify_one();
    }

    fn set_state(&mut self, id: ConnId, key: StateKey, payload: Bytes) {
        if let Some(mailbox) = self.queues.get_mut(&id) {
            mailbox.states.insert(key, payload);
            mailbox.wake.notify_one();
        }
    }

    /// Queues `chat.you` for `id`: who the server thinks it is.
    fn tell_you(&mut self, id: ConnId) {
        if let Some(you) = self.rooms.member(id) {
            if let Ok(json) = serde_json::to_vec(&you) {
                self.set_state(id, StateKey::You, Bytes::from(json));
            }
        }
    }
}

impl Chat {
    pub(crate) fn new(limits: Limits) -> Self {
        let state = State { rooms: Rooms::new(limits), queues: HashMap::new() };
        Chat { inner: Arc::new(Inner { state: Mutex::new(state) }) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `sock` a member, named `name` if given (else by its automatic name: `guest-<id>`
    /// for a page, `tcp-<id>` and so on for a program), or renames it to `name` if it was one
    /// already.
    ///
    /// The caller finishes its operation, then calls [`Entered::stay`]: a program that says
    /// something and hangs up at once has its message posted before it leaves.
    fn enter(&self, sock: &Sock, name: Option<&str>) -> Result<Entered, ChatError> {
        let id = sock.info().id;
        let transport = sock.info().transport.to_string();
        let now = now_ms();
        let (new, slow) = {
            let mut state = self.lock();
            let name = name.map(|n| state.rooms.check_name(id, &transport, n)).transpose()?;
            if state.rooms.contains(id) {
                let slow = match name {
                    Some(name) => {
                        let (_, outbox) = state.rooms.rename_to(id, name, now)?;
                        let slow = state.dispatch(outbox);
                        state.tell_you(id);
                        slow
                    }
                    None => Vec::new(),
                };
                (false, slow)
            } else {
                // The relay id is the page's address for direct messages (`chat.dm`, relayed
                // page to page without the chat's help).
                state.rooms.connect(id, transport, sock.relay_id(), now);
                if let Some(name) = name {
                    // In no room yet, so no one else's name is in the way; undone if it is.
                    if let Err(e) = state.rooms.rename_to(id, name, now) {
                        state.rooms.disconnect(id, now);
                        return Err(e);
                    }
                }
                let wake = Arc::new(Notify::new());
                let mailbox = Mailbox {
                    sock: sock.clone(),
                    lines: VecDeque::new(),
                    states: BTreeMap::new(),
                    wake: wake.clone(),
                };
                state.queues.insert(id, mailbox);
                tokio::spawn(deliver(Arc::downgrade(&self.inner), id, sock.clone(), wake));
                (true, Vec::new())
            }
        };
        close_slow(slow);
        Ok(Entered(new.then(|| Membership { chat: Arc::downgrade(&self.inner), id })))
    }

    fn join(&self, sock: &Sock, input: JoinIn) -> Result<rooms::Joined, ChatError> {
        let entered = self.enter(sock, input.name.as_deref())?;
        let joined = {
            let mut state = self.lock();
            state
                .rooms
                .join(sock.info().id, &input.room, now_ms())
                .map(|(joined, outbox)| (joined, state.dispatch(outbox)))
        };
        entered.stay(sock);
        let (joined, slow) = joined?;
        close_slow(slow);
        Ok(joined)
    }

    fn say(&self, sock: &Sock, input: SayIn) -> Result<rooms::Message, ChatError> {
        let entered = self.enter(sock, input.name.as_deref())?;
        let said = {
            let mut state = self.lock();
            let said = state.rooms.say(sock.info().id, &input.room, &input.text, now_ms());
            said.map(|(message, outbox)| (message, state.dispatch(outbox)))
        };
        entered.stay(sock);
        let (message, slow) = said?;
        close_slow(slow);
        Ok(message)
    }

    fn leave(&self, sock: &Sock, input: LeaveIn) -> Result<(), ChatError> {
        let id = sock.info().id;
        let slow = {
            let mut state = self.lock();
            let room = state.rooms.check_room(&input.room)?;
            let outbox = state.rooms.leave(id, &room, now_ms())?;
            // A member list of the room not sent yet is no longer the member's business.
            if let Some(mailbox) = state.queues.get_mut(&id) {
                mailbox.states.remove(&StateKey::Members(room));
            }
            state.dispatch(outbox)
        };
        close_slow(slow);
        Ok(())
    }

    fn rename(&self, sock: &Sock, input: RenameIn) -> Result<MemberInfo, ChatError> {
        let entered = self.enter(sock, Some(&input.name))?;
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
        let mut state = self.lock();
        state.rooms.set_rtt(sock.info().id, rtt_ms);
        state.tell_you(sock.info().id);
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
            match chat.enter(&sock, None) {
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
            Ok(Ok(NameAnswer { name })) => match self.enter(sock, Some(&name)) {
                Ok(entered) => entered.stay(sock),
                Err(e) => {
                    tracing::info!(id, "chat: the page's name {name:?} was refused: {e}");
                    self.lock().tell_you(id);
                }
            },
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
            async move { chat.join(&sock, input).map_err(|e| e.to_string()) }
        });
        let chat = self.clone();
        handlers.handle("chat.say", move |sock, input: SayIn| {
            let chat = chat.clone();
            async move { chat.say(&sock, input).map_err(|e| e.to_string()) }
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
            async move { chat.leave(&sock, input).map_err(|e| e.to_string()) }
        });
        let chat = self.clone();
        handlers.handle("chat.rename", move |sock, input: RenameIn| {
            let chat = chat.clone();
            async move { chat.rename(&sock, input).map_err(|e| e.to_string()) }
        });
        let chat = self.clone();
        handlers.handle("chat.rooms", move |_sock, _: serde_json::Value| {
            let rooms = chat.lock().rooms.room_list();
            async move { Ok::<_, String>(rooms) }
        });
        let chat = self.clone();
        handlers.handle("chat.rtt", move |sock, _: serde_json::Value| {
            let chat = chat.clone();
            async move { chat.ping(&sock).await.map(|rtt_ms| Rtt { rtt_ms }) }
        });
    }
}

/// Sends what waits in member `id`'s mailbox until the mailbox goes (the member left) or its
/// connection closes: lines as they come, in order; states at most once every
/// [`STATE_EVERY`], each the latest. A connection that reads slowly holds this task in
/// `buffer_notify`, and meanwhile its states are replaced, not piled up.
async fn deliver(chat: Weak<Inner>, id: ConnId, sock: Sock, wake: Arc<Notify>) {
    let mut states_due = tokio::time::Instant::now();
    loop {
        let due = tokio::time::Instant::now() >= states_due;
        let (lines, states, waiting) = {
            let Some(inner) = chat.upgrade() else { return };
            let mut state = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            let Some(mailbox) = state.queues.get_mut(&id) else { return };
            let lines = std::mem::take(&mut mailbox.lines);
            let states = if due { std::mem::take(&mut mailbox.states) } else { BTreeMap::new() };
            (lines, states, !mailbox.states.is_empty())
        };
        if lines.is_empty() && states.is_empty() {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(states_due), if waiting => {}
                _ = sock.closed() => return,
            }
            continue;
        }
        if !states.is_empty() {
            states_due = tokio::time::Instant::now() + STATE_EVERY;
        }
        for payload in lines {
            if sock.buffer_notify("chat.message", payload).await.is_err() {
                return;
            }
        }
        for (key, payload) in states {
            if sock.buffer_notify(key.notification(), payload).await.is_err() {
                return;
            }
        }
    }
}
