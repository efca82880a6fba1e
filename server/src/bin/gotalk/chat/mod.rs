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
//! (their id, name and round trip). The server also calls the page: a new WebSocket peer is
//! sent `chat.ping`, timed (and again every [`PING_EVERY`]); one that answers is a chat page,
//! so it is asked `chat.name` with a suggested name and renamed to its answer (at once: a page
//! with no name yet takes the suggestion, and renames itself once its user has chosen). A peer is a
//! member from its first chat operation (or its first answered ping) until its connection
//! closes. The rules and limits are in [`rooms`], free of I/O.
//!
//! Each member comes with its connection's relay id (`peer`), so pages send each other direct
//! messages through the gateway's relay (topic `chat.dm`): the chat neither sees nor keeps them.

mod rooms;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gotalk::{Handlers, Sock, TransportKind};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub(crate) use rooms::Limits;
use rooms::{ChatError, ConnId, MemberInfo, Outbox, Rooms, LOBBY};

/// How often the server measures a page's round trip.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(15);
/// How long a page may take to answer `chat.ping`.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a page may take to answer `chat.name`. It answers at once (and lets its user
/// rename later): a request held open would hold up a graceful end of the connection.
const NAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Notifications waiting for one member's connection. A member that falls this far behind is
/// disconnected rather than let the chat's memory grow.
const QUEUE: usize = 256;

/// The chat's limits on the command line; each left out keeps its default.
#[derive(clap::Args, Debug)]
pub(crate) struct ChatArgs {
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

/// A notification on its way to one member: its name and JSON payload.
type Outgoing = (&'static str, Bytes);

struct State {
    rooms: Rooms,
    /// Each member's notifications, in order, on their way to its connection.
    queues: HashMap<ConnId, (mpsc::Sender<Outgoing>, Sock)>,
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
                state.queues.remove(&self.id);
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
    /// Queues each note for its members, in order; returns the connections of members whose
    /// queue was full, to close once the lock is released.
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
            for id in to {
                self.send(id, note.name(), payload.clone(), &mut slow);
            }
        }
        slow
    }

    fn send(&mut self, id: ConnId, name: &'static str, payload: Bytes, slow: &mut Vec<Sock>) {
        if let Some((queue, sock)) = self.queues.get(&id) {
            if queue.try_send((name, payload)).is_err() && !slow.iter().any(|s| s.info().id == id) {
                slow.push(sock.clone());
            }
        }
    }

    /// Queues `chat.you` for `id`: who the server thinks it is.
    fn tell_you(&mut self, id: ConnId) -> Vec<Sock> {
        let mut slow = Vec::new();
        if let Some(you) = self.rooms.member(id) {
            if let Ok(json) = serde_json::to_vec(&you) {
                self.send(id, "chat.you", Bytes::from(json), &mut slow);
            }
        }
        slow
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

    /// Makes `sock` a member, named `name` if given (else `guest-<id>` for a page,
    /// `tcp-<id>` and so on for a program), or renames it to `name` if it was one already.
    ///
    /// The caller finishes its operation, then calls [`Entered::stay`]: a program that says
    /// something and hangs up at once has its message posted before it leaves.
    fn enter(&self, sock: &Sock, name: Option<&str>) -> Result<Entered, ChatError> {
        let id = sock.info().id;
        let (new, slow) = {
            let mut state = self.lock();
            let name = name.map(|n| state.rooms.check_name(n)).transpose()?;
            if state.rooms.contains(id) {
                let slow = match name {
                    Some(name) => {
                        let (_, outbox) = state.rooms.rename(id, &name, now_ms())?;
                        let mut slow = state.dispatch(outbox);
                        slow.extend(state.tell_you(id));
                        slow
                    }
                    None => Vec::new(),
                };
                (false, slow)
            } else {
                let transport = sock.info().transport;
                let name = name.unwrap_or_else(|| match transport {
                    TransportKind::WebSocket => format!("guest-{id}"),
                    other => format!("{other}-{id}"),
                });
                // The relay id is the page's address for direct messages (`chat.dm`, relayed
                // page to page without the chat's help).
                state.rooms.connect(id, name, transport.to_string(), sock.relay_id());
                let (queue, notes) = mpsc::channel(QUEUE);
                tokio::spawn(deliver(sock.clone(), notes));
                state.queues.insert(id, (queue, sock.clone()));
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
        let slow = {
            let mut state = self.lock();
            let outbox = state.rooms.leave(sock.info().id, &input.room, now_ms())?;
            state.dispatch(outbox)
        };
        close_slow(slow);
        Ok(())
    }

    fn rename(&self, sock: &Sock, input: RenameIn) -> Result<MemberInfo, ChatError> {
        let entered = self.enter(sock, Some(&input.name))?;
        let member = self.lock().rooms.member(sock.info().id);
        entered.stay(sock);
        member.ok_or_else(|| ChatError::BadName("gone".into()))
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
        let slow = {
            let mut state = self.lock();
            state.rooms.set_rtt(sock.info().id, rtt_ms);
            state.tell_you(sock.info().id)
        };
        close_slow(slow);
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
            if chat.enter(&sock, None).is_err() {
                return;
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
                    close_slow(self.lock().tell_you(id));
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

/// Sends a member's notifications in order until its queue closes (the member left) or its
/// connection does.
async fn deliver(sock: Sock, mut notes: mpsc::Receiver<Outgoing>) {
    while let Some((name, payload)) = notes.recv().await {
        if sock.buffer_notify(name, payload).await.is_err() {
            return;
        }
    }
}
