//! The chat's rules, free of I/O: what each member of this instance is called and which rooms
//! it is in, and for every change what to do to the relay's groups. Names follow
//! [`names`](super::names) and are unique within each room; how often a member may join and
//! leave, and how many rooms it may be in, are bounded.
//!
//! A room is the relay [group](Group) `chat-<room>`, so rooms reach every instance of a
//! cluster: who is in a room, and how many rooms there are, are read from the groups
//! ([`Cluster`]), and the room's feed is what is published to its group. This instance keeps
//! only its own members. Kept apart from the sockets so every rule and limit is tested with
//! plain calls, a given clock and the relay's one-process bus; `chat/mod.rs` applies the
//! [`Effect`]s these functions return.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use bytes::Bytes;
use gotalk::relay::{
    Group, Member as GroupMember, Note, PeerId, Relay, MAX_GROUP_LEN, MAX_KEEP, MAX_META,
};
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use super::names::{self, Name};

/// A connection's id (`ConnInfo::id`): one member per connection. Unique on one instance
/// only; across a cluster a member is told apart by its relay id.
pub(crate) type ConnId = u64;

/// The room every page starts in; it is listed even when empty.
pub(crate) const LOBBY: &str = "lobby";

/// What every room's group name begins with, so rooms cannot collide with the application's
/// other groups.
const PREFIX: &str = "chat-";

/// The longest room name in bytes: a group name holds the prefix and the room.
const ROOM_BYTES: usize = MAX_GROUP_LEN - PREFIX.len();

/// The notification a room's feed is published as.
pub(crate) const LINE: &str = "chat.message";

/// The group of a room that [`Rooms::check_room`] has passed.
pub(crate) fn group(room: &str) -> Option<Group> {
    Group::new(format!("{PREFIX}{room}")).ok()
}

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

    /// The longest room name, in characters (and at most 59 bytes of UTF-8, what a group
    /// name has room for). Default 24.
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

    /// How many messages each room keeps for newcomers. Default 100, at most 1000 (what a
    /// relay group keeps, [`MAX_KEEP`]).
    pub(crate) fn history(mut self, n: usize) -> Self {
        self.history = n.min(MAX_KEEP);
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

    /// How many messages each room keeps.
    pub(crate) fn kept(&self) -> usize {
        self.history
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
    /// The connection has no relay id, so it cannot be in a room: rooms are relay groups.
    NoRelay,
    /// A page's secret ([`Owner`]) of this many bytes, too short or too long.
    BadSecret(usize),
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
            ChatError::NoRelay => f.write_str("rooms need the relay, which this connection lacks"),
            ChatError::BadSecret(len) => write!(
                f,
                "a page's secret is {} to {} bytes; this one has {len}",
                Owner::MIN_SECRET,
                Owner::MAX_SECRET
            ),
        }
    }
}

impl std::error::Error for ChatError {}

/// What a line in a room's feed says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Message {
    pub(crate) room: String,
    /// Counts up on the instance that posted the line, from 1. Lines from two instances of a
    /// cluster may share a number; with the sender's `peer` it is unique.
    pub(crate) seq: u64,
    /// Milliseconds since the Unix epoch.
    pub(crate) time: u64,
    pub(crate) kind: Kind,
    /// The member's connection id and name at the time.
    pub(crate) from: u64,
    pub(crate) name: String,
    /// The sender's relay id.
    #[serde(default)]
    pub(crate) peer: Option<PeerId>,
    pub(crate) text: String,
}

/// A member as others see them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct MemberInfo {
    /// The connection id on the member's own instance.
    pub(crate) id: ConnId,
    pub(crate) name: String,
    /// `websocket`, `tcp`, ...
    pub(crate) transport: String,
    /// The id the gateway's relay gave the member's connection, so pages can message it
    /// directly and tell members of different instances apart; none when the relay is off.
    pub(crate) peer: Option<PeerId>,
    /// The last round trip the server measured to this member, when it answers `chat.ping`.
    pub(crate) rtt_ms: Option<f64>,
}

/// What a member says about itself to the other members of its groups (the group member's
/// `meta`), on every instance. `owner` and `since` stay between the instances: member lists
/// sent to pages are [`MemberInfo`]s, which have neither.
#[derive(Serialize, Deserialize)]
struct Meta<'a> {
    id: ConnId,
    name: &'a str,
    transport: &'a str,
    #[serde(default)]
    rtt_ms: Option<f64>,
    /// The [`Owner`] of the page, when it presented its secret.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    /// When the connection became a member, in milliseconds since the Unix epoch: of two
    /// rows of one owner, the newer is the page's live connection.
    #[serde(default)]
    since: u64,
}

/// A row of a group as the chat reads it: the member, and what tells one person's rows apart
/// from another's.
struct Row {
    info: MemberInfo,
    owner: Option<String>,
    since: u64,
}

impl Row {
    /// The member a group lists, if its description is a chat member's.
    fn from_group(member: &GroupMember) -> Option<Row> {
        let meta: Meta<'_> = serde_json::from_slice(&member.meta).ok()?;
        let info = MemberInfo {
            id: meta.id,
            name: meta.name.to_owned(),
            transport: meta.transport.to_owned(),
            peer: Some(member.peer),
            rtt_ms: meta.rtt_ms,
        };
        Some(Row { info, owner: meta.owner.map(str::to_owned), since: meta.since })
    }

    /// True when this row is someone other than the member at `peer` with `owner`: another
    /// connection, and not one of the same page's (an owner in common).
    fn is_other_than(&self, peer: Option<PeerId>, owner: Option<&str>) -> bool {
        self.info.peer != peer && (owner.is_none() || self.owner.as_deref() != owner)
    }
}

/// Who a page is across its connections: the SHA-256 of the secret it keeps for its tab, in
/// hex. A page that reconnects (its instance died, and its old rows linger on the other
/// instances until they expire) presents the same secret, so the name its old rows hold is
/// still its own. Only the hash is kept and shared between instances; the secret stays with
/// the connection that presented it, and neither reaches other pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner(String);

impl Owner {
    /// The shortest secret taken, in bytes: a page makes 32 random bytes, in hex.
    pub(crate) const MIN_SECRET: usize = 16;
    /// The longest secret taken, in bytes.
    pub(crate) const MAX_SECRET: usize = 128;

    /// The owner a page's `secret` makes.
    pub(crate) fn of(secret: &str) -> Result<Owner, ChatError> {
        let len = secret.len();
        if !(Self::MIN_SECRET..=Self::MAX_SECRET).contains(&len) {
            return Err(ChatError::BadSecret(len));
        }
        // Domain-separated, so the hash says nothing about where else the secret is used.
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(b"gotalk-chat-owner\0");
        context.update(secret.as_bytes());
        let digest = context.finish();
        let hex = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Ok(Owner(hex))
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

/// A room in the room list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RoomInfo {
    pub(crate) name: String,
    pub(crate) members: usize,
}

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

/// The relay's groups as the chat reads them: who is in a group and which groups there are,
/// on every instance.
pub(crate) trait Cluster {
    fn members(&self, group: &Group) -> Vec<GroupMember>;
    fn groups(&self) -> Vec<(Group, usize)>;
}

impl Cluster for Relay {
    fn members(&self, group: &Group) -> Vec<GroupMember> {
        Relay::members(self, group)
    }

    fn groups(&self) -> Vec<(Group, usize)> {
        Relay::groups(self)
    }
}

/// Every row of a room's group, on every instance.
fn rows(cluster: &dyn Cluster, room: &str) -> Vec<Row> {
    let Some(group) = group(room) else { return Vec::new() };
    cluster.members(&group).iter().filter_map(Row::from_group).collect()
}

/// A room's members, by name then id, as every instance lists them. A page with several rows
/// (its connection to an instance that died lingers until its rows expire) is listed once,
/// as its newest row: the connection it has now.
pub(crate) fn members_of(cluster: &dyn Cluster, room: &str) -> Vec<MemberInfo> {
    let mut newest: HashMap<String, (u64, Option<PeerId>)> = HashMap::new();
    let rows = rows(cluster, room);
    for row in &rows {
        if let Some(owner) = &row.owner {
            let this = (row.since, row.info.peer);
            let kept = newest.entry(owner.clone()).or_insert(this);
            *kept = (*kept).max(this);
        }
    }
    let mut members: Vec<MemberInfo> = rows
        .into_iter()
        .filter(|row| match &row.owner {
            Some(owner) => newest.get(owner) == Some(&(row.since, row.info.peer)),
            None => true,
        })
        .map(|row| row.info)
        .collect();
    members.sort_by(|a, b| {
        let by_name = a.name.to_lowercase().cmp(&b.name.to_lowercase());
        by_name.then(a.id.cmp(&b.id)).then(a.peer.cmp(&b.peer))
    });
    members
}

/// Every room, by name: the groups with the chat's prefix, and the lobby, listed even when
/// empty.
pub(crate) fn room_list(cluster: &dyn Cluster) -> Vec<RoomInfo> {
    let mut rooms: Vec<RoomInfo> = cluster
        .groups()
        .into_iter()
        .filter_map(|(group, members)| {
            let name = group.as_str().strip_prefix(PREFIX)?.to_owned();
            Some(RoomInfo { name, members })
        })
        .collect();
    if !rooms.iter().any(|r| r.name == LOBBY) {
        rooms.push(RoomInfo { name: LOBBY.to_owned(), members: 0 });
    }
    rooms.sort_by(|a, b| a.name.cmp(&b.name));
    rooms
}

/// What a change asks of the relay, for the member that made it, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    /// Put the member in the room's group, or update its description there.
    Join(String),
    /// Take the member out of the room's group.
    Leave(String),
    /// Publish a line to the room's group, kept for newcomers; to the other members only
    /// when `others` (the member sees its join or leave in the answer, or not at all).
    Line { message: Message, others: bool },
}

struct Member {
    name: Name,
    transport: String,
    peer: Option<PeerId>,
    /// Set by the first secret the page presents, and kept for the connection's life.
    owner: Option<Owner>,
    /// When it became a member, in milliseconds since the Unix epoch.
    since: u64,
    rtt_ms: Option<f64>,
    /// The round trip the member's groups were last told.
    told_rtt_ms: Option<f64>,
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

/// The name a connection has until it chooses one: `guest-<id>` for a page, `tcp-<id>` and so
/// on for a program. Unique on one instance, since ids are, and kept for that connection
/// alone.
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

/// This instance's members, and the numbering of the lines they post.
pub(crate) struct Rooms {
    limits: Limits,
    members: HashMap<ConnId, Member>,
    last_seq: u64,
}

impl Rooms {
    pub(crate) fn new(limits: Limits) -> Self {
        Rooms { limits, members: HashMap::new(), last_seq: 0 }
    }

    /// The longest name allowed, in characters.
    pub(crate) fn max_name_chars(&self) -> usize {
        self.limits.name_chars
    }

    /// How many lines each room keeps.
    pub(crate) fn history(&self) -> usize {
        self.limits.kept()
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
            owner: None,
            since: now,
            rtt_ms: None,
            told_rtt_ms: None,
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

    /// The description that goes with member `id` into its groups, on every instance.
    pub(crate) fn meta(&self, id: ConnId) -> Option<Bytes> {
        let member = self.members.get(&id)?;
        Some(describe(id, member, &member.name.shown))
    }

    /// Records the page's `owner` if member `id` has none yet: a page keeps one secret for
    /// its tab, and the first it presents on a connection is the one that connection keeps.
    /// A member already in rooms (a program that presents one late) is described again there.
    pub(crate) fn own(&mut self, id: ConnId, owner: Owner) -> Vec<Effect> {
        let Some(member) = self.members.get_mut(&id) else { return Vec::new() };
        if member.owner.is_some() {
            return Vec::new();
        }
        member.owner = Some(owner);
        member.rooms.iter().cloned().map(Effect::Join).collect()
    }

    /// The rooms `id` is in, by name.
    pub(crate) fn rooms_of(&self, id: ConnId) -> Vec<String> {
        self.members.get(&id).map(|m| m.rooms.iter().cloned().collect()).unwrap_or_default()
    }

    /// Records the round trip measured to `id`. Its rooms' member lists show it when it is
    /// the first, or differs from the one they show by more than half: each update goes to
    /// every instance and has every member sent new lists, so a page measured every 15 s
    /// does not cost the cluster that.
    pub(crate) fn set_rtt(&mut self, id: ConnId, rtt_ms: f64) -> Vec<Effect> {
        let Some(member) = self.members.get_mut(&id) else { return Vec::new() };
        member.rtt_ms = Some(rtt_ms);
        if member.told_rtt_ms.is_some_and(|told| (rtt_ms - told).abs() <= told / 2.0) {
            return Vec::new();
        }
        member.told_rtt_ms = Some(rtt_ms);
        member.rooms.iter().cloned().map(Effect::Join).collect()
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
    /// `ｌｏｂｂｙ` are `lobby`. A room name that passes makes a valid group name: the same
    /// characters, and bytes to spare for the prefix.
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
        if room.len() > ROOM_BYTES {
            return Err(ChatError::BadRoom(format!(
                "a room name is at most {ROOM_BYTES} bytes of UTF-8; this one has {}",
                room.len()
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

    /// A line of `room`'s feed from `from`, numbered.
    fn post(
        &mut self,
        room: &str,
        kind: Kind,
        from: ConnId,
        text: String,
        now: u64,
    ) -> Option<Message> {
        let member = self.members.get(&from)?;
        let (name, peer) = (member.name.shown.clone(), member.peer);
        self.last_seq += 1;
        Some(Message {
            room: room.to_owned(),
            seq: self.last_seq,
            time: now,
            kind,
            from,
            name,
            peer,
            text,
        })
    }

    /// Puts `id` in `room`, making the room if it is new, and returns the room's name as kept.
    /// The rooms limit and the name's uniqueness are checked against every instance's
    /// members. Joining a room one is in already changes nothing; [`joined`](Self::joined)
    /// answers the same.
    pub(crate) fn join(
        &mut self,
        id: ConnId,
        room: &str,
        now: u64,
        cluster: &dyn Cluster,
    ) -> Result<(String, Vec<Effect>), ChatError> {
        let room = self.check_room(room)?;
        let limits = &self.limits;
        let Some(member) = self.members.get(&id) else {
            return Err(ChatError::NotInRoom(room));
        };
        if member.rooms.contains(&room) {
            return Ok((room, Vec::new()));
        }
        if member.peer.is_none() {
            return Err(ChatError::NoRelay);
        }
        if member.rooms.len() >= limits.rooms_per_member {
            return Err(ChatError::InTooManyRooms(limits.rooms_per_member));
        }
        let rooms = room_list(cluster);
        if !rooms.iter().any(|r| r.name == room) && rooms.len() >= limits.rooms {
            return Err(ChatError::TooManyRooms(limits.rooms));
        }
        if taken(cluster, &room, &member.name.key, member.peer, member.owner.as_ref()) {
            return Err(ChatError::NameTaken { name: member.name.shown.clone(), room });
        }
        let member = self.members.get_mut(&id).ok_or(ChatError::NoRelay)?;
        // Taken last, so a join refused for another reason costs nothing.
        member.changes.take(limits.room_changes, now).map_err(|wait_ms| {
            ChatError::TooManyChanges { per_minute: limits.room_changes, wait_ms }
        })?;
        member.rooms.insert(room.clone());
        let mut effects = vec![Effect::Join(room.clone())];
        // The newcomer gets the join line in its history, so it goes to the others only.
        if let Some(message) = self.post(&room, Kind::Join, id, String::new(), now) {
            effects.push(Effect::Line { message, others: true });
        }
        Ok((room, effects))
    }

    /// What `id`, in `room`, is shown of it: with the room's kept lines, `history`.
    pub(crate) fn joined(
        &self,
        id: ConnId,
        room: String,
        cluster: &dyn Cluster,
        history: Vec<Message>,
    ) -> Result<Joined, ChatError> {
        Ok(Joined {
            you: self.member(id).ok_or_else(|| ChatError::NotInRoom(room.clone()))?,
            members: members_of(cluster, &room),
            history,
            rooms: room_list(cluster),
            max_text_chars: self.limits.text_chars,
            room,
        })
    }

    /// Takes `id` out of `room` (checked by [`check_room`](Self::check_room)). A room with
    /// nobody in it on any instance is gone, as its group is; the lobby stays listed.
    pub(crate) fn leave(
        &mut self,
        id: ConnId,
        room: &str,
        now: u64,
    ) -> Result<Vec<Effect>, ChatError> {
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

    fn leave_room(&mut self, id: ConnId, room: &str, now: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        // Posted while the member is still in, so the line has its name; sent to the others.
        if let Some(message) = self.post(room, Kind::Leave, id, String::new(), now) {
            effects.push(Effect::Line { message, others: true });
        }
        if let Some(member) = self.members.get_mut(&id) {
            member.rooms.remove(room);
        }
        effects.push(Effect::Leave(room.to_owned()));
        effects
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
        cluster: &dyn Cluster,
    ) -> Result<(String, Vec<Effect>), ChatError> {
        let Some(member) = self.members.get(&id) else {
            return Err(ChatError::BadName(names::refusal("belongs to members only")));
        };
        let name = self.check_name(id, &member.transport, name)?;
        self.rename_to(id, name, now, cluster)
    }

    /// [`rename`](Self::rename) with a name [`check_name`](Self::check_name) has passed.
    pub(crate) fn rename_to(
        &mut self,
        id: ConnId,
        name: Name,
        now: u64,
        cluster: &dyn Cluster,
    ) -> Result<(String, Vec<Effect>), ChatError> {
        let Some(member) = self.members.get(&id) else {
            return Err(ChatError::BadName(names::refusal("belongs to members only")));
        };
        if member.name == name {
            return Ok((name.shown, Vec::new()));
        }
        // The description goes to every instance, within the relay's bound; only a name
        // limit raised far past its default reaches it.
        if describe(id, member, &name.shown).len() > MAX_META {
            return Err(ChatError::BadName(names::refusal(format_args!(
                "is too long to share with the other members ({MAX_META} bytes at most)"
            ))));
        }
        for room in &member.rooms {
            if taken(cluster, room, &name.key, member.peer, member.owner.as_ref()) {
                return Err(ChatError::NameTaken { name: name.shown, room: room.clone() });
            }
        }
        let shown = name.shown.clone();
        let member = self.members.get_mut(&id).ok_or(ChatError::NoRelay)?;
        let old = std::mem::replace(&mut member.name, name).shown;
        let rooms: Vec<String> = member.rooms.iter().cloned().collect();
        let mut effects = Vec::new();
        for room in rooms {
            effects.push(Effect::Join(room.clone()));
            if let Some(message) = self.post(&room, Kind::Rename, id, old.clone(), now) {
                effects.push(Effect::Line { message, others: false });
            }
        }
        Ok((shown, effects))
    }

    /// Posts `text` to `room` from `id`, joining the room first if `id` is not in it (a TCP
    /// peer that only sends takes part this way).
    pub(crate) fn say(
        &mut self,
        id: ConnId,
        room: &str,
        text: &str,
        now: u64,
        cluster: &dyn Cluster,
    ) -> Result<(Message, Vec<Effect>), ChatError> {
        self.check_text(text)?;
        let room = self.check_room(room)?;
        let (_, mut effects) = self.join(id, &room, now, cluster)?;
        let message = self
            .post(&room, Kind::Text, id, text.to_owned(), now)
            .ok_or_else(|| ChatError::NotInRoom(room.clone()))?;
        effects.push(Effect::Line { message: message.clone(), others: false });
        Ok((message, effects))
    }

    /// Removes `id` from every room and from the chat, when its connection has closed.
    pub(crate) fn disconnect(&mut self, id: ConnId, now: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        for room in self.rooms_of(id) {
            effects.extend(self.leave_room(id, &room, now));
        }
        self.members.remove(&id);
        effects
    }
}

/// The description of member `id` under the name `shown`.
fn describe(id: ConnId, member: &Member, shown: &str) -> Bytes {
    let meta = Meta {
        id,
        name: shown,
        transport: &member.transport,
        rtt_ms: member.rtt_ms,
        owner: member.owner.as_ref().map(Owner::as_str),
        since: member.since,
    };
    Bytes::from(serde_json::to_vec(&meta).unwrap_or_default())
}

/// True when someone other than `peer`, on any instance, has the name `key` in `room`. Every
/// row, not only the ones listed: a row of the same `owner` is the same page, whichever
/// connection it is on, but a name held by anyone else is taken.
///
/// Two instances may let two members take one name in one room at the same instant: each
/// checks the members it knows of, and the other's join reaches it a moment later.
fn taken(
    cluster: &dyn Cluster,
    room: &str,
    key: &str,
    peer: Option<PeerId>,
    owner: Option<&Owner>,
) -> bool {
    let owner = owner.map(Owner::as_str);
    rows(cluster, room)
        .iter()
        .any(|row| row.is_other_than(peer, owner) && names::key(&row.info.name) == key)
}

/// A line as its room's group publishes it, kept for newcomers, and sent to everyone but
/// `except`.
pub(crate) fn note(message: &Message, except: Option<PeerId>, keep: usize) -> Option<Note> {
    let payload = serde_json::to_vec(message).ok()?;
    let note = Note::new(LINE, payload).ok()?.keep(keep);
    Some(match except {
        Some(peer) => note.except(peer),
        None => note,
    })
}

/// The lines among a group's kept notes, oldest first.
pub(crate) fn lines(kept: &[Note]) -> Vec<Message> {
    kept.iter()
        .filter(|note| note.name.as_str() == LINE)
        .filter_map(|note| serde_json::from_slice(&note.payload).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::FutureExt;
    use gotalk::relay::{Bus, LocalBus, Mailbox};

    use super::*;

    /// Lines, and the members each reached, in the order they went out.
    type Outbox = Vec<(Vec<ConnId>, Message)>;

    /// One instance's chat on the relay's one-process bus: every effect is applied to the
    /// bus's groups as `chat/mod.rs` applies it to the relay's, and each line is noted with
    /// the members the group hands it to.
    struct World {
        chat: Rooms,
        bus: Arc<LocalBus>,
        /// Test members' ids are their relay ids' first bytes plus this, so two instances
        /// on one bus have members of the same connection id and different relay ids.
        base: u64,
    }

    impl Cluster for LocalBus {
        fn members(&self, group: &Group) -> Vec<GroupMember> {
            Bus::members(self, group)
        }

        fn groups(&self) -> Vec<(Group, usize)> {
            Bus::groups(self)
        }
    }

    fn rooms(limits: Limits) -> World {
        instance(limits, Arc::new(LocalBus::new()), 0)
    }

    /// An instance with members 1 to 3, called m1 to m3, on `bus`.
    fn instance(limits: Limits, bus: Arc<LocalBus>, base: u64) -> World {
        let mut world = World { chat: Rooms::new(limits), bus, base };
        for id in 1..=3 {
            world.connect(id, "websocket".into(), Some(world.peer(id)), 0);
            world.rename(id, &format!("m{id}"), 0).unwrap();
        }
        world
    }

    /// A relay id of its own for each test member.
    fn peer(id: ConnId) -> PeerId {
        let mut bytes = [0; 16];
        bytes[..4].copy_from_slice(&u32::try_from(id).unwrap().to_be_bytes());
        PeerId::from_random(bytes)
    }

    impl World {
        fn peer(&self, id: ConnId) -> PeerId {
            peer(id + self.base)
        }

        /// A member's id here, or for another instance's member the number in its relay id.
        fn id_of(&self, peer: PeerId) -> ConnId {
            let bytes: [u8; 4] = peer.as_bytes()[..4].try_into().unwrap();
            let n = u64::from(u32::from_be_bytes(bytes));
            n.checked_sub(self.base).filter(|&id| id > 0 && id < 100).unwrap_or(n)
        }

        fn connect(
            &mut self,
            id: ConnId,
            transport: String,
            peer: Option<PeerId>,
            now: u64,
        ) -> bool {
            if let Some(peer) = peer {
                // The one-process bus registers at once.
                drop(self.bus.register(peer, Mailbox::new(1 << 20)));
            }
            self.chat.connect(id, transport, peer, now)
        }

        /// Applies `effects` of member `id` to the bus, as the chat applies them to the relay.
        fn apply(&self, id: ConnId, peer: Option<PeerId>, effects: Vec<Effect>) -> Outbox {
            let mut outbox = Outbox::new();
            let peer = peer.expect("only members with a relay id change groups");
            for effect in effects {
                match effect {
                    Effect::Join(room) => {
                        let meta = self.chat.meta(id).unwrap();
                        self.bus.join(&group(&room).unwrap(), GroupMember { peer, meta });
                    }
                    Effect::Leave(room) => self.bus.leave(&group(&room).unwrap(), peer),
                    Effect::Line { message, others } => {
                        let group = group(&message.room).unwrap();
                        let except = others.then_some(peer);
                        let to = Bus::members(&*self.bus, &group)
                            .iter()
                            .filter(|m| Some(m.peer) != except)
                            .map(|m| self.id_of(m.peer))
                            .collect();
                        let note = note(&message, except, self.chat.history()).unwrap();
                        self.bus.publish(&group, note).unwrap();
                        outbox.push((to, message));
                    }
                }
            }
            outbox
        }

        fn peer_of(&self, id: ConnId) -> Option<PeerId> {
            self.chat.member(id).and_then(|m| m.peer)
        }

        fn join(
            &mut self,
            id: ConnId,
            room: &str,
            now: u64,
        ) -> Result<(Joined, Outbox), ChatError> {
            let (room, effects) = self.chat.join(id, room, now, &*self.bus)?;
            let outbox = self.apply(id, self.peer_of(id), effects);
            let kept = self.bus.history(&group(&room).unwrap()).now_or_never().unwrap();
            let joined = self.chat.joined(id, room, &*self.bus, lines(&kept))?;
            Ok((joined, outbox))
        }

        fn say(
            &mut self,
            id: ConnId,
            room: &str,
            text: &str,
            now: u64,
        ) -> Result<(Message, Outbox), ChatError> {
            let (message, effects) = self.chat.say(id, room, text, now, &*self.bus)?;
            Ok((message, self.apply(id, self.peer_of(id), effects)))
        }

        fn leave(&mut self, id: ConnId, room: &str, now: u64) -> Result<Outbox, ChatError> {
            let effects = self.chat.leave(id, room, now)?;
            Ok(self.apply(id, self.peer_of(id), effects))
        }

        fn rename(
            &mut self,
            id: ConnId,
            name: &str,
            now: u64,
        ) -> Result<(String, Outbox), ChatError> {
            let (name, effects) = self.chat.rename(id, name, now, &*self.bus)?;
            Ok((name, self.apply(id, self.peer_of(id), effects)))
        }

        /// Has member `id` present the secret of its page's tab.
        fn own(&mut self, id: ConnId, secret: &str) -> Outbox {
            let effects = self.chat.own(id, Owner::of(secret).unwrap());
            self.apply(id, self.peer_of(id), effects)
        }

        fn disconnect(&mut self, id: ConnId, now: u64) -> Outbox {
            let peer = self.peer_of(id);
            let effects = self.chat.disconnect(id, now);
            if effects.is_empty() {
                return Outbox::new();
            }
            self.apply(id, peer, effects)
        }

        fn contains(&self, id: ConnId) -> bool {
            self.chat.contains(id)
        }

        fn member(&self, id: ConnId) -> Option<MemberInfo> {
            self.chat.member(id)
        }

        fn members_of(&self, room: &str) -> Vec<MemberInfo> {
            members_of(&*self.bus, room)
        }

        fn room_list(&self) -> Vec<RoomInfo> {
            room_list(&*self.bus)
        }
    }

    fn messages_to(outbox: &Outbox, id: ConnId) -> Vec<&Message> {
        outbox.iter().filter(|(to, _)| to.contains(&id)).map(|(_, m)| m).collect()
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
    fn members_carry_their_relay_id_and_one_without_cannot_join() {
        let mut chat = rooms(Limits::default());
        assert!(chat.connect(4, "tcp".into(), None, 0));
        assert!(!chat.connect(1, "websocket".into(), None, 0), "already a member");
        chat.join(1, "lobby", 1).unwrap();
        // Rooms are relay groups: a connection the relay does not serve stays out, told why.
        assert_eq!(chat.join(4, "lobby", 2).unwrap_err(), ChatError::NoRelay);
        assert_eq!(chat.member(4).unwrap().peer, None);
        let (joined, _) = chat.join(2, "lobby", 2).unwrap();
        let peers: Vec<(String, Option<PeerId>)> =
            joined.members.iter().map(|m| (m.name.clone(), m.peer)).collect();
        assert_eq!(peers, [("m1".into(), Some(peer(1))), ("m2".into(), Some(peer(2)))]);
        assert_eq!(joined.you.peer, Some(peer(2)));
        // The member list the others are sent is the group's, with the ids too.
        assert_eq!(chat.members_of("lobby"), joined.members);
        // On the wire: the id as text, or null.
        let json = serde_json::to_value(&joined.members).unwrap();
        assert_eq!(json[0]["peer"], serde_json::json!(peer(1).to_string()));
        let json = serde_json::to_value(chat.member(4).unwrap()).unwrap();
        assert_eq!(json["peer"], serde_json::Value::Null);
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

    #[test]
    fn two_instances_share_rooms_names_and_the_rooms_limit() {
        // Two instances of a cluster see one set of groups; their connection ids overlap,
        // their relay ids do not.
        let bus = Arc::new(LocalBus::new());
        let mut a = instance(Limits::default().rooms(3), bus.clone(), 0);
        let mut b = instance(Limits::default().rooms(3), bus, 100);
        a.rename(1, "alice", 1).unwrap();
        a.join(1, "lobby", 1).unwrap();
        // b's member 1 is not a's member 1: alice's name is taken for it too.
        b.rename(1, "ALICE", 2).unwrap();
        assert_eq!(b.join(1, "lobby", 2).unwrap_err(), taken("ALICE", "lobby"));
        let (joined, _) = b.join(2, "lobby", 2).unwrap();
        let names: Vec<&str> = joined.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["alice", "m2"]);
        // Nor may a member of b rename to a name a member of a has in their room.
        assert_eq!(b.rename(2, "Alice", 3).unwrap_err(), taken("Alice", "lobby"));
        // A line said on one instance reaches the room's members on both.
        let (message, outbox) = a.say(1, "lobby", "hi", 4).unwrap();
        assert_eq!(outbox, [(vec![1, 102], message)], "a's 1, and b's 2 (relay id 102)");
        // The rooms limit counts the rooms of both.
        a.join(2, "x", 5).unwrap();
        b.join(3, "y", 5).unwrap();
        assert_eq!(a.join(3, "z", 6).unwrap_err(), ChatError::TooManyRooms(3));
        let rooms: Vec<(String, usize)> =
            b.room_list().into_iter().map(|r| (r.name, r.members)).collect();
        assert_eq!(rooms, [("lobby".into(), 2), ("x".into(), 1), ("y".into(), 1)]);
        // A member of b that goes is gone from a's lists too.
        b.disconnect(2, 7);
        let names: Vec<String> = a.members_of("lobby").into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["alice"]);
        // The history newcomers get holds lines posted on both instances; their numbers
        // may repeat, never with the same sender.
        let (joined, _) = a.join(3, "lobby", 8).unwrap();
        let lines: Vec<(Kind, String)> =
            joined.history.iter().map(|m| (m.kind, m.name.clone())).collect();
        assert_eq!(
            lines,
            [
                (Kind::Join, "alice".into()),
                (Kind::Join, "m2".into()),
                (Kind::Text, "alice".into()),
                (Kind::Leave, "m2".into()),
                (Kind::Join, "m3".into()),
            ]
        );
        let keys: BTreeSet<(Option<PeerId>, u64)> =
            joined.history.iter().map(|m| (m.peer, m.seq)).collect();
        assert_eq!(keys.len(), joined.history.len());
    }

    #[test]
    fn a_room_name_fits_a_group_name() {
        let mut chat = rooms(Limits::default().room_chars(100));
        let at_the_edge = "é".repeat(29) + "a";
        assert_eq!(at_the_edge.len(), ROOM_BYTES);
        assert_eq!(chat.join(1, &at_the_edge, 1).unwrap().0.room, at_the_edge);
        let past = "é".repeat(30);
        assert_eq!(
            chat.join(1, &past, 2).unwrap_err().to_string(),
            "a room name is at most 59 bytes of UTF-8; this one has 60"
        );
        // Every room is a group of the chat's own, apart from the application's others.
        let groups: Vec<String> =
            Bus::groups(&*chat.bus).into_iter().map(|(g, _)| g.to_string()).collect();
        assert_eq!(groups, [format!("chat-{at_the_edge}")]);
    }

    #[test]
    fn history_is_capped_at_what_a_group_keeps() {
        assert_eq!(Limits::default().history(MAX_KEEP).kept(), MAX_KEEP);
        assert_eq!(Limits::default().history(MAX_KEEP + 1).kept(), MAX_KEEP);
    }

    #[test]
    fn a_name_too_long_to_share_is_refused() {
        // Only a name limit far past its default reaches the relay's bound on descriptions.
        let mut chat = rooms(Limits::default().name_chars(MAX_META));
        let fits = "a".repeat(
            MAX_META
                - r#"{"id":1,"name":"","transport":"websocket","rtt_ms":null,"since":0}"#.len(),
        );
        chat.rename(1, &fits, 1).unwrap();
        chat.join(1, "lobby", 1).unwrap();
        let e = chat.rename(1, &format!("{fits}a"), 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "name is too long to share with the other members (1024 bytes at most)"
        );
    }

    #[test]
    fn a_round_trip_reaches_the_member_lists_when_it_changes_by_more_than_half() {
        let mut chat = rooms(Limits::default());
        chat.join(1, "lobby", 1).unwrap();
        chat.join(1, "x", 1).unwrap();
        let rtt = |chat: &World| chat.members_of("lobby")[0].rtt_ms;
        let set = |chat: &mut World, ms: f64| {
            let effects = chat.chat.set_rtt(1, ms);
            let told = !effects.is_empty();
            chat.apply(1, Some(peer(1)), effects);
            told
        };
        assert!(set(&mut chat, 10.0), "the first, in both rooms");
        assert_eq!((rtt(&chat), chat.members_of("x")[0].rtt_ms), (Some(10.0), Some(10.0)));
        // Within half of what the lists show: the member hears it (chat.you), no one else.
        assert!(!set(&mut chat, 15.0));
        assert!(!set(&mut chat, 5.0));
        assert_eq!(chat.member(1).unwrap().rtt_ms, Some(5.0));
        assert_eq!(rtt(&chat), Some(10.0));
        assert!(set(&mut chat, 15.1));
        assert_eq!(rtt(&chat), Some(15.1));
    }

    #[test]
    fn a_page_back_on_another_instance_takes_its_name_back_and_is_listed_once() {
        // Bob's page was on instance a, which died: its rows stay on the bus until they
        // expire (here, until a's member 1 is disconnected). The page reconnects on b.
        let bus = Arc::new(LocalBus::new());
        let mut a = instance(Limits::default(), bus.clone(), 0);
        let mut b = instance(Limits::default(), bus.clone(), 100);
        let tab = "a5f0c3e1d2b4a6978877665544332211";
        a.own(1, tab);
        a.rename(1, "Bob", 1).unwrap();
        a.join(1, "lobby", 1).unwrap();
        b.join(2, "lobby", 2).unwrap();
        assert!(b.connect(4, "websocket".into(), Some(b.peer(4)), 5));
        b.own(4, tab);
        assert_eq!(b.rename(4, "bob", 5).unwrap().0, "bob");
        let (joined, _) = b.join(4, "lobby", 5).unwrap();
        // Listed once, as the connection it has now.
        let listed: Vec<(String, Option<PeerId>)> =
            joined.members.iter().map(|m| (m.name.clone(), m.peer)).collect();
        assert_eq!(listed, [("bob".into(), Some(peer(104))), ("m2".into(), Some(peer(102)))]);
        assert_eq!(a.members_of("lobby"), joined.members, "on every instance");
        assert_eq!(a.room_list()[0].members, 3, "both rows are in the group until one expires");
        // Anyone else is refused the name: without a secret, or with another tab's.
        assert!(b.connect(5, "websocket".into(), Some(b.peer(5)), 6));
        b.rename(5, "BOB", 6).unwrap();
        assert_eq!(b.join(5, "lobby", 6).unwrap_err(), taken("BOB", "lobby"));
        b.own(5, "another tab's secret, as long");
        assert_eq!(b.join(5, "lobby", 6).unwrap_err(), taken("BOB", "lobby"));
        assert_eq!(b.rename(2, "Bob", 6).unwrap_err(), taken("Bob", "lobby"));
        // A connection keeps the first secret it presented.
        b.own(5, tab);
        assert_eq!(b.join(5, "lobby", 7).unwrap_err(), taken("BOB", "lobby"));
        // The stale row goes; the page is still listed once, the same.
        a.disconnect(1, 8);
        assert_eq!(b.members_of("lobby"), joined.members);
        // Only the secret's hash crosses to the other instances, and neither reaches a page.
        let group = group("lobby").unwrap();
        let metas: Vec<String> = Bus::members(&*bus, &group)
            .iter()
            .map(|m| String::from_utf8(m.meta.to_vec()).unwrap())
            .collect();
        let hash = Owner::of(tab).unwrap().0;
        assert!(metas.iter().any(|m| m.contains(&hash)), "{metas:?}");
        assert!(metas.iter().all(|m| !m.contains(tab)), "{metas:?}");
        let json = serde_json::to_string(&joined).unwrap();
        assert!(!json.contains(&hash) && !json.contains(tab), "{json}");
        assert!(!json.contains("owner") && !json.contains("since"), "{json}");
    }

    #[test]
    fn a_secret_at_the_edges() {
        assert_eq!(Owner::of(&"s".repeat(15)).unwrap_err(), ChatError::BadSecret(15));
        assert!(Owner::of(&"s".repeat(16)).is_ok());
        assert!(Owner::of(&"s".repeat(128)).is_ok());
        assert_eq!(
            Owner::of(&"s".repeat(129)).unwrap_err().to_string(),
            "a page's secret is 16 to 128 bytes; this one has 129"
        );
        // One secret, one owner; another secret, another.
        assert_eq!(Owner::of(&"s".repeat(16)), Owner::of(&"s".repeat(16)));
        assert_ne!(Owner::of(&"s".repeat(16)), Owner::of(&"t".repeat(16)));
    }
}
