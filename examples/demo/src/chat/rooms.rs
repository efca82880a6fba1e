//! The chat's state, free of I/O: members keyed by connection, rooms with bounded history,
//! and for every change the notifications it causes, addressed by connection. Names follow
//! [`names`](super::names) and are unique within each room; how often a member may join and
//! leave, and how many rooms it may be in, are bounded.
//!
//! Kept apart from the sockets so every rule and limit is tested with plain calls and a given
//! clock; `chat/mod.rs` delivers what these functions return.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;

use gotalk::relay::PeerId;
use serde::Serialize;
use unicode_normalization::UnicodeNormalization;

use super::names::{self, Name};

/// A connection's id (`ConnInfo::id`): one member per connection.
pub(crate) type ConnId = u64;

/// The room every page starts in; it exists even when empty.
pub(crate) const LOBBY: &str = "lobby";

/// The chat's bounds, each with its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limits {
    name_chars: usize,
    room_chars: usize,
    text_chars: usize,
    rooms: usize,
    history: usize,
    room_changes: usize,
    rooms_per_member: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            name_chars: 32,
            room_chars: 24,
            text_chars: 1000,
            rooms: 32,
            history: 100,
            room_changes: 60,
            rooms_per_member: 8,
        }
    }
}

impl Limits {
    /// The longest name, in characters. Default 32.
    pub(crate) fn name_chars(mut self, n: usize) -> Self {
        self.name_chars = n;
        self
    }

    /// The longest room name, in characters. Default 24.
    pub(crate) fn room_chars(mut self, n: usize) -> Self {
        self.room_chars = n;
        self
    }

    /// The longest message, in characters. Default 1000.
    pub(crate) fn text_chars(mut self, n: usize) -> Self {
        self.text_chars = n;
        self
    }

    /// How many rooms may exist at once, the lobby included. Default 32.
    pub(crate) fn rooms(mut self, n: usize) -> Self {
        self.rooms = n;
        self
    }

    /// How many messages each room keeps for newcomers. Default 100.
    pub(crate) fn history(mut self, n: usize) -> Self {
        self.history = n;
        self
    }

    /// How many joins and leaves one member may make in a minute, in a burst or spread out
    /// (a token bucket of `n` that refills at `n` a minute). Default 60; at least 1.
    pub(crate) fn room_changes(mut self, n: usize) -> Self {
        self.room_changes = n.max(1);
        self
    }

    /// How many rooms one member may be in at once. Default 8.
    pub(crate) fn rooms_per_member(mut self, n: usize) -> Self {
        self.rooms_per_member = n;
        self
    }
}

/// Why a chat operation was refused; its text is the ErrorResult the peer gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChatError {
    /// A name the rules of [`names`] refuse, or another connection's automatic name; the text
    /// begins with `name`.
    BadName(String),
    /// Someone else in `room` has the name (compared by key).
    NameTaken { name: String, room: String },
    /// A room name that is empty, too long or has characters other than letters, digits, `-`
    /// and `_`.
    BadRoom(String),
    /// An empty message, or one past the limit.
    BadText(String),
    /// Creating one more room would pass the limit.
    TooManyRooms(usize),
    /// The member is in as many rooms as one may be.
    InTooManyRooms(usize),
    /// The member has joined and left as often as it may for now; it may again in `wait_ms`.
    TooManyChanges { per_minute: usize, wait_ms: u64 },
    /// Leaving a room the connection is not in.
    NotInRoom(String),
}

impl fmt::Display for ChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatError::BadName(why) | ChatError::BadRoom(why) | ChatError::BadText(why) => {
                f.write_str(why)
            }
            ChatError::NameTaken { name, room } => {
                write!(f, "name {name:?} is taken in room {room:?}: choose another")
            }
            ChatError::TooManyRooms(n) => {
                write!(f, "there are already {n} rooms, the most allowed: join one of them")
            }
            ChatError::InTooManyRooms(n) => {
                write!(f, "you are in {n} rooms, the most allowed: leave one first")
            }
            ChatError::TooManyChanges { per_minute, wait_ms } => write!(
                f,
                "too many joins and leaves: at most {per_minute} a minute; try again in {:.1} s",
                (*wait_ms as f64 / 1000.0).max(0.1)
            ),
            ChatError::NotInRoom(room) => write!(f, "you are not in {room:?}"),
        }
    }
}

impl std::error::Error for ChatError {}

/// What a line in a room's feed says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// A member's message.
    Text,
    /// Someone came in.
    Join,
    /// Someone went out.
    Leave,
    /// Someone changed their name; `text` is the old one.
    Rename,
}

/// One line of a room's feed, as members receive it (`chat.message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Message {
    pub(crate) room: String,
    /// Counts up from 1 within the room.
    pub(crate) seq: u64,
    /// Milliseconds since the Unix epoch.
    pub(crate) time: u64,
    pub(crate) kind: Kind,
    /// The member's connection id and name at the time.
    pub(crate) from: u64,
    pub(crate) name: String,
    pub(crate) text: String,
}

/// A member as others see them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct MemberInfo {
    pub(crate) id: ConnId,
    pub(crate) name: String,
    /// `websocket`, `tcp`, ...
    pub(crate) transport: String,
    /// The id the gateway's relay gave the member's connection, so pages can message it
    /// directly; none when the relay is off.
    pub(crate) peer: Option<PeerId>,
    /// The last round trip the server measured to this member, when it answers `chat.ping`.
    pub(crate) rtt_ms: Option<f64>,
}

/// A room in the room list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RoomInfo {
    pub(crate) name: String,
    pub(crate) members: usize,
}

/// A notification to send.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub(crate) enum Note {
    /// `chat.message`.
    Message(Message),
    /// `chat.members`: a room's members, after any change.
    Members { room: String, members: Vec<MemberInfo> },
    /// `chat.rooms`: every room, after one was made, removed, or its count changed.
    Rooms { rooms: Vec<RoomInfo> },
}

impl Note {
    /// The notification's name on the wire.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Note::Message(_) => "chat.message",
            Note::Members { .. } => "chat.members",
            Note::Rooms { .. } => "chat.rooms",
        }
    }
}

/// Notifications and who gets each, in the order they must arrive.
pub(crate) type Outbox = Vec<(Vec<ConnId>, Note)>;

/// What a member that joined a room needs to show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Joined {
    pub(crate) room: String,
    pub(crate) you: MemberInfo,
    pub(crate) members: Vec<MemberInfo>,
    pub(crate) history: Vec<Message>,
    pub(crate) rooms: Vec<RoomInfo>,
    /// The longest message allowed, in characters, for the page's counter.
    pub(crate) max_text_chars: usize,
}

struct Member {
    name: Name,
    transport: String,
    peer: Option<PeerId>,
    rtt_ms: Option<f64>,
    rooms: BTreeSet<String>,
    changes: Bucket,
}

/// A token bucket of joins and leaves, refilled by the clock the chat's calls pass in.
struct Bucket {
    tokens: f64,
    at: u64,
}

impl Bucket {
    fn full(per_minute: usize, now: u64) -> Self {
        Bucket { tokens: per_minute as f64, at: now }
    }

    /// Takes one token, or says how many milliseconds until there is one.
    fn take(&mut self, per_minute: usize, now: u64) -> Result<(), u64> {
        let per_ms = per_minute as f64 / 60_000.0;
        let elapsed = now.saturating_sub(self.at) as f64;
        self.tokens = (self.tokens + elapsed * per_ms).min(per_minute as f64);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / per_ms).ceil() as u64)
        }
    }
}

#[derive(Default)]
struct Room {
    members: BTreeSet<ConnId>,
    /// Each member's name key: who has which name here.
    names: HashMap<String, ConnId>,
    history: VecDeque<Message>,
    last_seq: u64,
}

/// The name a connection has until it chooses one: `guest-<id>` for a page, `tcp-<id>` and so
/// on for a program. Unique, since ids are, and kept for that connection alone.
fn automatic_name(id: ConnId, transport: &str) -> String {
    match transport {
        "websocket" => format!("guest-{id}"),
        other => format!("{other}-{id}"),
    }
}

/// True when `key` has the form of an automatic name: `guest-`, or a transport's name and
/// `-`, then digits.
fn looks_automatic(key: &str) -> bool {
    key.split_once('-').is_some_and(|(prefix, digits)| {
        ["guest", "tcp", "tls", "websocket", "memory"].contains(&prefix)
            && !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Every member and room.
pub(crate) struct Rooms {
    limits: Limits,
    members: HashMap<ConnId, Member>,
    rooms: BTreeMap<String, Room>,
}

impl Rooms {
    pub(crate) fn new(limits: Limits) -> Self {
        let mut rooms = BTreeMap::new();
        rooms.insert(LOBBY.to_owned(), Room::default());
        Rooms { limits, members: HashMap::new(), rooms }
    }

    /// The longest name allowed, in characters.
    pub(crate) fn max_name_chars(&self) -> usize {
        self.limits.name_chars
    }

    /// True when `id` is a member (in a room or not).
    pub(crate) fn contains(&self, id: ConnId) -> bool {
        self.members.contains_key(&id)
    }

    /// Adds `id` as a member under its automatic name, reachable through the relay at `peer`
    /// if it has an id there, in no room yet. Returns false if it already was.
    pub(crate) fn connect(
        &mut self,
        id: ConnId,
        transport: String,
        peer: Option<PeerId>,
        now: u64,
    ) -> bool {
        if self.members.contains_key(&id) {
            return false;
        }
        let automatic = automatic_name(id, &transport);
        let member = Member {
            name: Name { key: automatic.to_lowercase(), shown: automatic },
            transport,
            peer,
            rtt_ms: None,
            rooms: BTreeSet::new(),
            changes: Bucket::full(self.limits.room_changes, now),
        };
        self.members.insert(id, member);
        true
    }

    /// The member as others see them.
    pub(crate) fn member(&self, id: ConnId) -> Option<MemberInfo> {
        self.members.get(&id).map(|m| MemberInfo {
            id,
            name: m.name.shown.clone(),
            transport: m.transport.clone(),
            peer: m.peer,
            rtt_ms: m.rtt_ms,
        })
    }

    /// Records the round trip measured to `id`.
    pub(crate) fn set_rtt(&mut self, id: ConnId, rtt_ms: f64) {
        if let Some(member) = self.members.get_mut(&id) {
            member.rtt_ms = Some(rtt_ms);
        }
    }

    /// Every room, by name.
    pub(crate) fn room_list(&self) -> Vec<RoomInfo> {
        self.rooms
            .iter()
            .map(|(name, room)| RoomInfo { name: name.clone(), members: room.members.len() })
            .collect()
    }

    /// A room's members, by name then id.
    pub(crate) fn members_of(&self, room: &str) -> Vec<MemberInfo> {
        let Some(room) = self.rooms.get(room) else { return Vec::new() };
        let mut members: Vec<MemberInfo> =
            room.members.iter().filter_map(|&id| self.member(id)).collect();
        members.sort_by(|a, b| {
            a.name.to_lowercase().cmp(&b.name.to_lowercase()).then(a.id.cmp(&b.id))
        });
        members
    }

    /// Checks a name that connection `id` over `transport` chose, and returns it normalised
    /// with its key. Another connection's automatic name is refused, so those stay unique.
    pub(crate) fn check_name(
        &self,
        id: ConnId,
        transport: &str,
        name: &str,
    ) -> Result<Name, ChatError> {
        let name = names::normalise(name, self.limits.name_chars).map_err(ChatError::BadName)?;
        if looks_automatic(&name.key) && name.key != automatic_name(id, transport) {
            return Err(ChatError::BadName(names::refusal(format_args!(
                "{:?} is the automatic name of another connection",
                name.shown
            ))));
        }
        Ok(name)
    }

    /// Checks a room name and returns it in NFKC, trimmed and in lower case, so `Lobby` and
    /// `ｌｏｂｂｙ` are `lobby`.
    pub(crate) fn check_room(&self, room: &str) -> Result<String, ChatError> {
        let room = room.nfkc().collect::<String>().trim().to_lowercase();
        let chars = room.chars().count();
        if chars == 0 {
            return Err(ChatError::BadRoom("a room name cannot be empty".into()));
        }
        if chars > self.limits.room_chars {
            return Err(ChatError::BadRoom(format!(
                "a room name is at most {} characters; this one has {chars}",
                self.limits.room_chars
            )));
        }
        if !room.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_') {
            return Err(ChatError::BadRoom(format!(
                "{room:?}: a room name is letters, digits, - and _"
            )));
        }
        Ok(room)
    }

    fn check_text(&self, text: &str) -> Result<(), ChatError> {
        if text.trim().is_empty() {
            return Err(ChatError::BadText("a message cannot be empty".into()));
        }
        let chars = text.chars().count();
        if chars > self.limits.text_chars {
            return Err(ChatError::BadText(format!(
                "a message is at most {} characters; this one has {chars}",
                self.limits.text_chars
            )));
        }
        Ok(())
    }

    /// Appends a line to `room`'s feed, dropping the oldest past the history limit, and
    /// addresses it to the room's members.
    fn post(
        &mut self,
        room: &str,
        kind: Kind,
        from: ConnId,
        text: String,
        now: u64,
    ) -> Option<(Vec<ConnId>, Message)> {
        let name = self.members.get(&from)?.name.shown.clone();
        let history = self.limits.history;
        let state = self.rooms.get_mut(room)?;
        state.last_seq += 1;
        let message = Message {
            room: room.to_owned(),
            seq: state.last_seq,
            time: now,
            kind,
            from,
            name,
            text,
        };
        state.history.push_back(message.clone());
        while state.history.len() > history {
            state.history.pop_front();
        }
        Some((state.members.iter().copied().collect(), message))
    }

    fn members_note(&self, room: &str) -> (Vec<ConnId>, Note) {
        let to =
            self.rooms.get(room).map(|r| r.members.iter().copied().collect()).unwrap_or_default();
        (to, Note::Members { room: room.to_owned(), members: self.members_of(room) })
    }

    fn rooms_note(&self) -> (Vec<ConnId>, Note) {
        (self.members.keys().copied().collect(), Note::Rooms { rooms: self.room_list() })
    }

    /// Puts `id` in `room`, making the room if it is new. Joining a room one is in already
    /// changes nothing and answers the same.
    pub(crate) fn join(
        &mut self,
        id: ConnId,
        room: &str,
        now: u64,
    ) -> Result<(Joined, Outbox), ChatError> {
        let room = self.check_room(room)?;
        let mut outbox = Outbox::new();
        let limits = &self.limits;
        if let Some(member) = self.members.get_mut(&id).filter(|m| !m.rooms.contains(&room)) {
            if member.rooms.len() >= limits.rooms_per_member {
                return Err(ChatError::InTooManyRooms(limits.rooms_per_member));
            }
            let existing = self.rooms.get(&room);
            if existing.is_none() && self.rooms.len() >= limits.rooms {
                return Err(ChatError::TooManyRooms(limits.rooms));
            }
            if existing.and_then(|r| r.names.get(&member.name.key)).is_some_and(|&o| o != id) {
                return Err(ChatError::NameTaken { name: member.name.shown.clone(), room });
            }
            // Taken last, so a join refused for another reason costs nothing.
            member.changes.take(limits.room_changes, now).map_err(|wait_ms| {
                ChatError::TooManyChanges { per_minute: limits.room_changes, wait_ms }
            })?;
            member.rooms.insert(room.clone());
            let key = member.name.key.clone();
            let state = self.rooms.entry(room.clone()).or_default();
            state.members.insert(id);
            state.names.insert(key, id);
            // The newcomer gets the join line in its history, so it goes to the others only.
            if let Some((to, message)) = self.post(&room, Kind::Join, id, String::new(), now) {
                let others = to.into_iter().filter(|&m| m != id).collect();
                outbox.push((others, Note::Message(message)));
            }
            outbox.push(self.members_note(&room));
            outbox.push(self.rooms_note());
        }
        let joined = Joined {
            you: self.member(id).ok_or_else(|| ChatError::NotInRoom(room.clone()))?,
            members: self.members_of(&room),
            history: self
                .rooms
                .get(&room)
                .map(|r| r.history.iter().cloned().collect())
                .unwrap_or_default(),
            rooms: self.room_list(),
            max_text_chars: self.limits.text_chars,
            room,
        };
        Ok((joined, outbox))
    }

    /// Takes `id` out of `room`; an empty room other than the lobby goes away.
    pub(crate) fn leave(&mut self, id: ConnId, room: &str, now: u64) -> Result<Outbox, ChatError> {
        let room = self.check_room(room)?;
        let limits = &self.limits;
        let Some(member) = self.members.get_mut(&id).filter(|m| m.rooms.contains(&room)) else {
            return Err(ChatError::NotInRoom(room));
        };
        member.changes.take(limits.room_changes, now).map_err(|wait_ms| {
            ChatError::TooManyChanges { per_minute: limits.room_changes, wait_ms }
        })?;
        Ok(self.leave_room(id, &room, now))
    }

    fn leave_room(&mut self, id: ConnId, room: &str, now: u64) -> Outbox {
        let mut outbox = Outbox::new();
        // Posted while the member is still in, so the line has its name; sent to the others.
        if let Some((to, message)) = self.post(room, Kind::Leave, id, String::new(), now) {
            let others = to.into_iter().filter(|&m| m != id).collect();
            outbox.push((others, Note::Message(message)));
        }
        let key = self.members.get_mut(&id).map(|member| {
            member.rooms.remove(room);
            member.name.key.clone()
        });
        let empty = match self.rooms.get_mut(room) {
            Some(state) => {
                state.members.remove(&id);
                if let Some(key) = key {
                    state.names.remove(&key);
                }
                state.members.is_empty()
            }
            None => false,
        };
        if empty && room != LOBBY {
            self.rooms.remove(room);
        } else {
            outbox.push(self.members_note(room));
        }
        outbox.push(self.rooms_note());
        outbox
    }

    /// Renames `id` in every room it is in, unless the name is taken in one of them. Returns
    /// the name as kept (normalised). The chat checks first and calls
    /// [`rename_to`](Self::rename_to); the tests pass raw names here.
    #[cfg(test)]
    pub(crate) fn rename(
        &mut self,
        id: ConnId,
        name: &str,
        now: u64,
    ) -> Result<(String, Outbox), ChatError> {
        let Some(member) = self.members.get(&id) else {
            return Err(ChatError::BadName(names::refusal("belongs to members only")));
        };
        let name = self.check_name(id, &member.transport, name)?;
        self.rename_to(id, name, now)
    }

    /// [`rename`](Self::rename) with a name [`check_name`](Self::check_name) has passed.
    pub(crate) fn rename_to(
        &mut self,
        id: ConnId,
        name: Name,
        now: u64,
    ) -> Result<(String, Outbox), ChatError> {
        let Some(member) = self.members.get_mut(&id) else {
            return Err(ChatError::BadName(names::refusal("belongs to members only")));
        };
        if member.name == name {
            return Ok((name.shown, Outbox::new()));
        }
        for room in &member.rooms {
            let holder = self.rooms.get(room).and_then(|r| r.names.get(&name.key));
            if holder.is_some_and(|&other| other != id) {
                return Err(ChatError::NameTaken { name: name.shown, room: room.clone() });
            }
        }
        let shown = name.shown.clone();
        let old = std::mem::replace(&mut member.name, name);
        let rooms: Vec<String> = member.rooms.iter().cloned().collect();
        for room in &rooms {
            if let Some(state) = self.rooms.get_mut(room) {
                state.names.remove(&old.key);
                state.names.insert(member.name.key.clone(), id);
            }
        }
        let old = old.shown;
        let mut outbox = Outbox::new();
        for room in rooms {
            if let Some((to, message)) = self.post(&room, Kind::Rename, id, old.clone(), now) {
                outbox.push((to, Note::Message(message)));
            }
            outbox.push(self.members_note(&room));
        }
        Ok((shown, outbox))
    }

    /// Posts `text` to `room` from `id`, joining the room first if `id` is not in it (a TCP
    /// peer that only sends takes part this way).
    pub(crate) fn say(
        &mut self,
        id: ConnId,
        room: &str,
        text: &str,
        now: u64,
    ) -> Result<(Message, Outbox), ChatError> {
        self.check_text(text)?;
        let room = self.check_room(room)?;
        let (_, mut outbox) = self.join(id, &room, now)?;
        let (to, message) = self
            .post(&room, Kind::Text, id, text.to_owned(), now)
            .ok_or_else(|| ChatError::NotInRoom(room.clone()))?;
        outbox.push((to, Note::Message(message.clone())));
        Ok((message, outbox))
    }

    /// Removes `id` from every room and from the chat, when its connection has closed.
    pub(crate) fn disconnect(&mut self, id: ConnId, now: u64) -> Outbox {
        let rooms: Vec<String> =
            self.members.get(&id).map(|m| m.rooms.iter().cloned().collect()).unwrap_or_default();
        let mut outbox = Outbox::new();
        for room in rooms {
            outbox.extend(self.leave_room(id, &room, now));
        }
        self.members.remove(&id);
        // The last rooms note went out while `id` was still listed: one more without it is
        // not needed, but one addressed to it would be wasted, so drop it from every list.
        for (to, _) in &mut outbox {
            to.retain(|&m| m != id);
        }
        outbox
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(limits: Limits) -> Rooms {
        let mut rooms = Rooms::new(limits);
        for id in 1..=3 {
            rooms.connect(id, "websocket".into(), Some(peer(id)), 0);
            rooms.rename(id, &format!("m{id}"), 0).unwrap();
        }
        rooms
    }

    /// A relay id of its own for each test member.
    fn peer(id: ConnId) -> PeerId {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&id.to_be_bytes());
        PeerId::from_random(bytes)
    }

    fn messages_to(outbox: &Outbox, id: ConnId) -> Vec<&Message> {
        outbox
            .iter()
            .filter(|(to, _)| to.contains(&id))
            .filter_map(|(_, note)| match note {
                Note::Message(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_message_reaches_its_room_only() {
        let mut chat = rooms(Limits::default());
        chat.join(1, "lobby", 10).unwrap();
        chat.join(2, "lobby", 11).unwrap();
        chat.join(3, "elsewhere", 12).unwrap();
        let (message, outbox) = chat.say(1, "lobby", "hi 😀", 13).unwrap();
        assert_eq!(
            (message.kind, message.text.as_str(), message.name.as_str()),
            (Kind::Text, "hi 😀", "m1")
        );
        assert_eq!(messages_to(&outbox, 1), [&message]);
        assert_eq!(messages_to(&outbox, 2), [&message]);
        assert!(messages_to(&outbox, 3).is_empty());
    }

    #[test]
    fn saying_in_a_room_joins_it_and_a_join_tells_the_others() {
        let mut chat = rooms(Limits::default());
        chat.join(2, "lobby", 1).unwrap();
        let (_, outbox) = chat.say(1, "Lobby", "hello", 2).unwrap();
        let to_2: Vec<Kind> = messages_to(&outbox, 2).iter().map(|m| m.kind).collect();
        assert_eq!(to_2, [Kind::Join, Kind::Text]);
        // The sender sees its message, and its join in the history instead.
        let to_1: Vec<Kind> = messages_to(&outbox, 1).iter().map(|m| m.kind).collect();
        assert_eq!(to_1, [Kind::Text]);
        let names: Vec<String> = chat.members_of("lobby").into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["m1", "m2"]);
    }

    #[test]
    fn history_keeps_the_last_n() {
        let mut chat = rooms(Limits::default().history(3));
        for i in 0..5 {
            chat.say(1, "lobby", &format!("n{i}"), i).unwrap();
        }
        let (joined, _) = chat.join(2, "lobby", 9).unwrap();
        let texts: Vec<&str> = joined.history.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["n3", "n4", ""], "the last three lines, the newcomer's join last");
        assert_eq!(joined.history[2].kind, Kind::Join);
        assert_eq!(joined.history[2].seq, 7);
    }

    #[test]
    fn text_limit_at_the_edge() {
        let mut chat = rooms(Limits::default().text_chars(5));
        // Characters, not bytes: five emoji are twenty bytes.
        assert!(chat.say(1, "lobby", "😀😀😀😀😀", 1).is_ok());
        let e = chat.say(1, "lobby", "😀😀😀😀😀😀", 2).unwrap_err();
        assert_eq!(e.to_string(), "a message is at most 5 characters; this one has 6");
        assert!(chat.say(1, "lobby", " \n ", 3).is_err());
        // U+0000 is text like any other.
        assert_eq!(chat.say(1, "lobby", "a\0b", 4).unwrap().0.text, "a\0b");
    }

    #[test]
    fn name_limit_at_the_edge() {
        let mut chat = rooms(Limits::default().name_chars(4));
        assert_eq!(chat.rename(1, "  Zoë ", 1).unwrap().0, "Zoë");
        assert_eq!(
            chat.rename(1, "Zoëy!", 2).unwrap_err().to_string(),
            "name is at most 4 characters; this one has 5"
        );
        assert!(chat.rename(1, "", 3).is_err());
        assert!(chat.rename(1, "a\nb", 4).is_err());
        assert!(chat.rename(99, "ok", 5).is_err(), "not a member");
    }

    #[test]
    fn room_name_limit_at_the_edge() {
        let mut chat = rooms(Limits::default().room_chars(3));
        assert_eq!(chat.join(1, "ABC", 1).unwrap().0.room, "abc");
        assert!(chat.join(1, "abcd", 2).is_err());
        assert!(chat.join(1, "a b", 3).is_err());
        assert!(chat.join(1, "", 4).is_err());
        assert!(chat.join(1, "é-_", 5).is_ok());
    }

    #[test]
    fn rooms_limit_at_the_edge_and_empty_rooms_go() {
        // The lobby counts: two more rooms fit in three.
        let mut chat = rooms(Limits::default().rooms(3));
        chat.join(1, "a", 1).unwrap();
        chat.join(2, "b", 2).unwrap();
        assert_eq!(chat.join(3, "c", 3).unwrap_err(), ChatError::TooManyRooms(3));
        // Joining a room that exists is fine at the limit.
        chat.join(3, "a", 4).unwrap();
        chat.leave(2, "b", 5).unwrap();
        chat.join(3, "c", 6).unwrap();
        let names: Vec<String> = chat.room_list().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["a", "c", "lobby"]);
        assert_eq!(chat.leave(2, "b", 7).unwrap_err(), ChatError::NotInRoom("b".into()));
    }

    #[test]
    fn a_rename_is_announced_in_each_room() {
        let mut chat = rooms(Limits::default());
        chat.join(1, "lobby", 1).unwrap();
        chat.join(1, "x", 1).unwrap();
        chat.join(2, "x", 1).unwrap();
        let (_, outbox) = chat.rename(1, "Ada", 2).unwrap();
        let to_2 = messages_to(&outbox, 2);
        assert_eq!(to_2.len(), 1);
        assert_eq!(
            (to_2[0].kind, to_2[0].name.as_str(), to_2[0].text.as_str()),
            (Kind::Rename, "Ada", "m1")
        );
        assert_eq!(messages_to(&outbox, 1).len(), 2, "both of its rooms");
        assert!(chat.rename(1, "Ada", 3).unwrap().1.is_empty(), "no change, no news");
    }

    #[test]
    fn a_closed_connection_leaves_everywhere() {
        let mut chat = rooms(Limits::default());
        chat.join(1, "lobby", 1).unwrap();
        chat.join(1, "x", 1).unwrap();
        chat.join(2, "lobby", 1).unwrap();
        let outbox = chat.disconnect(1, 2);
        assert!(!chat.contains(1));
        assert!(outbox.iter().all(|(to, _)| !to.contains(&1)));
        let to_2 = messages_to(&outbox, 2);
        assert_eq!((to_2.len(), to_2[0].kind, to_2[0].name.as_str()), (1, Kind::Leave, "m1"));
        let names: Vec<String> = chat.room_list().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["lobby"], "x was empty and went; the lobby stays");
        assert!(chat.disconnect(1, 3).is_empty(), "twice is harmless");
    }

    #[test]
    fn members_carry_their_relay_id_and_one_without_has_none() {
        let mut chat = rooms(Limits::default());
        assert!(chat.connect(4, "tcp".into(), None, 0));
        assert!(!chat.connect(1, "websocket".into(), None, 0), "already a member");
        chat.join(1, "lobby", 1).unwrap();
        let (joined, outbox) = chat.join(4, "lobby", 2).unwrap();
        let peers: Vec<(String, Option<PeerId>)> =
            joined.members.iter().map(|m| (m.name.clone(), m.peer)).collect();
        assert_eq!(peers, [("m1".into(), Some(peer(1))), ("tcp-4".into(), None)]);
        assert_eq!(joined.you.peer, None);
        // The members note the others get carries the ids too.
        let noted = outbox.iter().find_map(|(to, note)| match note {
            Note::Members { members, .. } if to.contains(&1) => Some(members.clone()),
            _ => None,
        });
        assert_eq!(noted.unwrap(), joined.members);
        // On the wire: the id as text, or null.
        let json = serde_json::to_value(&joined.members).unwrap();
        assert_eq!(json[0]["peer"], serde_json::json!(peer(1).to_string()));
        assert_eq!(json[1]["peer"], serde_json::Value::Null);
    }

    fn taken(name: &str, room: &str) -> ChatError {
        ChatError::NameTaken { name: name.into(), room: room.into() }
    }

    #[test]
    fn a_name_is_unique_in_each_room_ignoring_case_and_width() {
        let mut chat = rooms(Limits::default());
        chat.rename(1, "alice", 1).unwrap();
        chat.join(1, "lobby", 1).unwrap();
        // Another alice may be elsewhere, but not join alice's room.
        assert_eq!(chat.rename(2, "ａｌｉｃｅ", 2).unwrap().0, "alice");
        assert_eq!(chat.join(2, "lobby", 2).unwrap_err(), taken("alice", "lobby"));
        assert_eq!(
            chat.join(2, "lobby", 2).unwrap_err().to_string(),
            r#"name "alice" is taken in room "lobby": choose another"#
        );
        chat.rename(2, "ALICE", 3).unwrap();
        assert_eq!(chat.join(2, "lobby", 3).unwrap_err(), taken("ALICE", "lobby"));
        // Nor may a member of the room rename to it.
        chat.join(3, "lobby", 4).unwrap();
        assert_eq!(chat.rename(3, "Alice", 4).unwrap_err(), taken("Alice", "lobby"));
        // Its owner may change its case; then the old spelling is free for no one else.
        assert_eq!(chat.rename(1, "Alice", 5).unwrap().0, "Alice");
        assert_eq!(chat.rename(3, "alice", 5).unwrap_err(), taken("alice", "lobby"));
        // Once alice has left, or renamed, the name is free.
        chat.rename(1, "Ada", 6).unwrap();
        chat.join(2, "lobby", 6).unwrap();
        chat.leave(2, "lobby", 7).unwrap();
        chat.rename(3, "alice", 7).unwrap();
        let names: Vec<String> = chat.members_of("lobby").into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["Ada", "alice"]);
        // A refused join changed nothing.
        assert_eq!(chat.room_list().iter().find(|r| r.name == "lobby").unwrap().members, 2);
    }

    #[test]
    fn another_connections_automatic_name_is_refused() {
        let mut chat = rooms(Limits::default());
        for other in ["guest-2", "GUEST-2", "tcp-17", "websocket-9", "ｔｌｓ-１"] {
            let e = chat.rename(1, other, 1).unwrap_err().to_string();
            assert!(e.ends_with("is the automatic name of another connection"), "{other}: {e}");
        }
        // Its own is fine, and so are names that only look a little like one.
        assert_eq!(chat.rename(1, "Guest-1", 2).unwrap().0, "Guest-1");
        for fine in ["guest-", "guest-x1", "guests-2", "tcp 17"] {
            assert!(chat.rename(1, fine, 3).is_ok(), "{fine}");
        }
        assert!(chat.connect(12, "tcp".into(), None, 3));
        assert_eq!(chat.member(12).unwrap().name, "tcp-12");
    }

    #[test]
    fn room_changes_at_the_edge_refill_with_time() {
        // Four a minute: four at once pass, the fifth waits 15 s for the first token back.
        let mut chat = rooms(Limits::default().room_changes(4));
        chat.join(1, "a", 0).unwrap();
        chat.leave(1, "a", 0).unwrap();
        chat.join(1, "b", 0).unwrap();
        chat.join(1, "c", 0).unwrap();
        let e = chat.leave(1, "b", 0).unwrap_err();
        assert_eq!(e, ChatError::TooManyChanges { per_minute: 4, wait_ms: 15_000 });
        assert_eq!(
            e.to_string(),
            "too many joins and leaves: at most 4 a minute; try again in 15.0 s"
        );
        assert!(matches!(
            chat.join(1, "d", 14_999),
            Err(ChatError::TooManyChanges { wait_ms: 1, .. })
        ));
        // A refused change took nothing: one token at 15 s, one more at 30 s.
        chat.join(1, "d", 15_000).unwrap();
        assert!(chat.leave(1, "d", 15_000).is_err());
        chat.leave(1, "d", 30_000).unwrap();
        // Joining a room one is in already, and a refused join, cost nothing.
        chat.join(1, "c", 30_000).unwrap();
        assert_eq!(
            chat.join(1, "bad room", 30_000).unwrap_err().to_string(),
            "\"bad room\": a room name is letters, digits, - and _"
        );
        // Each member has its own bucket.
        for room in ["a", "b", "c", "d"] {
            chat.join(2, room, 30_000).unwrap();
        }
    }

    #[test]
    fn rooms_per_member_at_the_edge() {
        let mut chat = rooms(Limits::default().rooms_per_member(2));
        chat.join(1, "lobby", 1).unwrap();
        chat.join(1, "a", 1).unwrap();
        assert_eq!(chat.join(1, "b", 1).unwrap_err(), ChatError::InTooManyRooms(2));
        assert_eq!(
            chat.say(1, "b", "hi", 1).unwrap_err().to_string(),
            "you are in 2 rooms, the most allowed: leave one first"
        );
        // Still fine in a room it is in; after leaving one, another.
        chat.say(1, "a", "hi", 2).unwrap();
        chat.leave(1, "lobby", 3).unwrap();
        chat.join(1, "b", 3).unwrap();
    }

    #[test]
    fn room_names_are_nfkc() {
        let mut chat = rooms(Limits::default());
        assert_eq!(chat.join(1, "ＬＯＢＢＹ", 1).unwrap().0.room, "lobby");
        assert_eq!(chat.join(1, "ｓｉｄｅ", 1).unwrap().0.room, "side");
        assert!(chat.join(1, "si\u{200b}de", 1).is_err());
    }
}
