//! What instances say to each other on the bus, and its encoding: a version byte, a kind
//! byte, then the kind's fields (integers big-endian, strings and payloads prefixed with
//! their length). Payloads travel as they are, without copying or escaping.
//!
//! Everything read from the bus is checked as if a stranger wrote it: group and notification
//! names are validated as the relay validates its own, descriptions and kept counts stay
//! within the relay's limits, and no count read from the wire sizes an allocation. A message
//! that does not decode is dropped and counted by the caller.

use bytes::{BufMut, Bytes, BytesMut};
use gotalk::protocol::relay::PeerId;
use gotalk::protocol::Name;
use gotalk::relay::{Group, Held, Member, Note, MAX_KEEP, MAX_META};

/// The encoding's version: a message of another version is dropped.
const VERSION: u8 = 1;

/// An instance's id on the bus: random at each start, so a restarted process never adopts
/// the state of the one before.
pub(crate) type Iid = u64;

/// A change to one instance's members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Join(Group, Member),
    Leave(Group, PeerId),
}

/// One instance's members, group by group.
pub(crate) type Rows = Vec<(Group, Vec<Member>)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Msg {
    /// A relay to a peer, on its channel, as a request: answered with an [`Outcome`] byte.
    Deliver { to: PeerId, payload: Bytes },
    /// A group's message (on the group's channel) or a broadcast (`group` None, on `all`).
    Note { origin: Iid, group: Option<Group>, note: Note },
    /// A new instance: others send it their rows.
    Hello { origin: Iid },
    /// An instance leaving: its rows go at once.
    Bye { origin: Iid },
    /// An instance is alive, with the sequence number of its latest change.
    Beat { origin: Iid, seq: u64 },
    /// One change to an instance's rows.
    Delta { origin: Iid, seq: u64, change: Change },
    /// All of an instance's rows, as of `seq`.
    Snapshot { origin: Iid, seq: u64, rows: Rows },
    /// Asks an instance for its rows, after a gap in its sequence.
    SnapshotPlease { origin: Iid },
    /// Asks an instance for a group's kept messages, as a request: answered with
    /// [`encode_notes`].
    HistoryPlease { group: Group },
    /// The liveness probe, sent to the sender's own channel.
    Probe { origin: Iid },
    /// Takes over a kept session, on its peer's channel, as a request: answered by the
    /// instance holding it with [`encode_handover`].
    Resume { origin: Iid, id: PeerId, secret: [u8; 16] },
}

const DELIVER: u8 = 1;
const NOTE: u8 = 2;
const HELLO: u8 = 3;
const BYE: u8 = 4;
const BEAT: u8 = 5;
const DELTA: u8 = 6;
const SNAPSHOT: u8 = 7;
const SNAPSHOT_PLEASE: u8 = 8;
const HISTORY_PLEASE: u8 = 9;
const PROBE: u8 = 10;
const RESUME: u8 = 11;

/// The answer to a [`Msg::Deliver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Delivered = 0,
    Full = 1,
    Unknown = 2,
}

impl Outcome {
    pub(crate) fn encode(self) -> Bytes {
        Bytes::from(vec![self as u8])
    }

    pub(crate) fn decode(answer: &[u8]) -> Option<Outcome> {
        match answer {
            [0] => Some(Outcome::Delivered),
            [1] => Some(Outcome::Full),
            [2] => Some(Outcome::Unknown),
            _ => None,
        }
    }
}

impl Msg {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        out.put_u8(VERSION);
        match self {
            Msg::Deliver { to, payload } => {
                out.put_u8(DELIVER);
                out.put_slice(to.as_bytes());
                put_bytes(&mut out, payload);
            }
            Msg::Note { origin, group, note } => {
                out.put_u8(NOTE);
                out.put_u64(*origin);
                put_str(&mut out, group.as_ref().map_or("", Group::as_str));
                put_note(&mut out, note);
            }
            Msg::Hello { origin } => {
                out.put_u8(HELLO);
                out.put_u64(*origin);
            }
            Msg::Bye { origin } => {
                out.put_u8(BYE);
                out.put_u64(*origin);
            }
            Msg::Beat { origin, seq } => {
                out.put_u8(BEAT);
                out.put_u64(*origin);
                out.put_u64(*seq);
            }
            Msg::Delta { origin, seq, change } => {
                out.put_u8(DELTA);
                out.put_u64(*origin);
                out.put_u64(*seq);
                match change {
                    Change::Join(group, member) => {
                        out.put_u8(0);
                        put_str(&mut out, group.as_str());
                        put_member(&mut out, member);
                    }
                    Change::Leave(group, peer) => {
                        out.put_u8(1);
                        put_str(&mut out, group.as_str());
                        out.put_slice(peer.as_bytes());
                    }
                }
            }
            Msg::Snapshot { origin, seq, rows } => {
                out.put_u8(SNAPSHOT);
                out.put_u64(*origin);
                out.put_u64(*seq);
                out.put_u32(len32(rows.len()));
                for (group, members) in rows {
                    put_str(&mut out, group.as_str());
                    out.put_u32(len32(members.len()));
                    for member in members {
                        put_member(&mut out, member);
                    }
                }
            }
            Msg::SnapshotPlease { origin } => {
                out.put_u8(SNAPSHOT_PLEASE);
                out.put_u64(*origin);
            }
            Msg::HistoryPlease { group } => {
                out.put_u8(HISTORY_PLEASE);
                put_str(&mut out, group.as_str());
            }
            Msg::Probe { origin } => {
                out.put_u8(PROBE);
                out.put_u64(*origin);
            }
            Msg::Resume { origin, id, secret } => {
                out.put_u8(RESUME);
                out.put_u64(*origin);
                out.put_slice(id.as_bytes());
                out.put_slice(secret);
            }
        }
        out.freeze()
    }

    /// The message in `bytes`, or None for anything malformed, of another version or with
    /// bytes left over.
    pub(crate) fn decode(bytes: &Bytes) -> Option<Msg> {
        let mut r = Reader { bytes, at: 0 };
        if r.u8()? != VERSION {
            return None;
        }
        let msg = match r.u8()? {
            DELIVER => Msg::Deliver { to: r.peer()?, payload: r.bytes()? },
            NOTE => {
                let origin = r.u64()?;
                let group = r.str()?;
                let group = if group.is_empty() { None } else { Some(Group::new(group).ok()?) };
                Msg::Note { origin, group, note: r.note()? }
            }
            HELLO => Msg::Hello { origin: r.u64()? },
            BYE => Msg::Bye { origin: r.u64()? },
            BEAT => Msg::Beat { origin: r.u64()?, seq: r.u64()? },
            DELTA => {
                let (origin, seq) = (r.u64()?, r.u64()?);
                let change = match r.u8()? {
                    0 => Change::Join(r.group()?, r.member()?),
                    1 => Change::Leave(r.group()?, r.peer()?),
                    _ => return None,
                };
                Msg::Delta { origin, seq, change }
            }
            SNAPSHOT => {
                let (origin, seq) = (r.u64()?, r.u64()?);
                let groups = r.u32()?;
                let mut rows = Vec::new();
                for _ in 0..groups {
                    let group = r.group()?;
                    let count = r.u32()?;
                    let mut members = Vec::new();
                    for _ in 0..count {
                        members.push(r.member()?);
                    }
                    rows.push((group, members));
                }
                Msg::Snapshot { origin, seq, rows }
            }
            SNAPSHOT_PLEASE => Msg::SnapshotPlease { origin: r.u64()? },
            HISTORY_PLEASE => Msg::HistoryPlease { group: r.group()? },
            PROBE => Msg::Probe { origin: r.u64()? },
            RESUME => Msg::Resume {
                origin: r.u64()?,
                id: r.peer()?,
                secret: r.take(16)?.try_into().ok()?,
            },
            _ => return None,
        };
        r.done().then_some(msg)
    }
}

/// A group's kept messages, the answer to [`Msg::HistoryPlease`].
pub(crate) fn encode_notes<'a>(notes: impl ExactSizeIterator<Item = &'a Note>) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(VERSION);
    out.put_u32(len32(notes.len()));
    for note in notes {
        put_note(&mut out, note);
    }
    out.freeze()
}

pub(crate) fn decode_notes(bytes: &Bytes) -> Option<Vec<Note>> {
    let mut r = Reader { bytes, at: 0 };
    if r.u8()? != VERSION {
        return None;
    }
    let count = r.u32()?;
    if count as usize > MAX_KEEP {
        return None;
    }
    let mut notes = Vec::new();
    for _ in 0..count {
        notes.push(r.note()?);
    }
    r.done().then_some(notes)
}

/// A kept session as the instance that held it hands it over: its groups with its
/// description in each, and the messages it held, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Handover {
    pub(crate) groups: Vec<(Group, Bytes)>,
    pub(crate) held: Vec<Held>,
}

/// The answer to [`Msg::Resume`]: the session, or None for a refusal.
pub(crate) fn encode_handover(handover: Option<&Handover>) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(VERSION);
    let Some(handover) = handover else {
        out.put_u8(0);
        return out.freeze();
    };
    out.put_u8(1);
    out.put_u32(len32(handover.groups.len()));
    for (group, meta) in &handover.groups {
        put_str(&mut out, group.as_str());
        put_bytes(&mut out, meta);
    }
    out.put_u32(len32(handover.held.len()));
    for held in &handover.held {
        match held {
            Held::Relay(payload) => {
                out.put_u8(0);
                put_bytes(&mut out, payload);
            }
            Held::Note(name, payload) => {
                out.put_u8(1);
                put_str(&mut out, name.as_str());
                put_bytes(&mut out, payload);
            }
        }
    }
    out.freeze()
}

/// The session handed over (`Some(None)`: refused), or None for anything malformed.
pub(crate) fn decode_handover(bytes: &Bytes) -> Option<Option<Handover>> {
    let mut r = Reader { bytes, at: 0 };
    if r.u8()? != VERSION {
        return None;
    }
    if r.u8()? == 0 {
        return r.done().then_some(None);
    }
    let mut handover = Handover::default();
    for _ in 0..r.u32()? {
        let group = r.group()?;
        let meta = r.bytes()?;
        if meta.len() > MAX_META {
            return None;
        }
        handover.groups.push((group, meta));
    }
    for _ in 0..r.u32()? {
        let held = match r.u8()? {
            0 => Held::Relay(r.bytes()?),
            1 => {
                let name = Name::new(r.str()?).ok()?;
                Held::Note(name, r.bytes()?)
            }
            _ => return None,
        };
        handover.held.push(held);
    }
    r.done().then_some(Some(handover))
}

fn len32(n: usize) -> u32 {
    // Every list encoded here is bounded far below 4 G entries (payloads by the bus's own
    // message size), so saturating is only a guard.
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn put_str(out: &mut BytesMut, s: &str) {
    // Names here are group names (≤ 64 bytes) and notification names (≤ 255 bytes).
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.put_u16(len);
    out.put_slice(&s.as_bytes()[..usize::from(len)]);
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32(len32(b.len()));
    out.put_slice(b);
}

fn put_member(out: &mut BytesMut, member: &Member) {
    out.put_slice(member.peer.as_bytes());
    put_bytes(out, &member.meta);
}

fn put_note(out: &mut BytesMut, note: &Note) {
    put_str(out, note.name.as_str());
    match note.except {
        Some(peer) => {
            out.put_u8(1);
            out.put_slice(peer.as_bytes());
        }
        None => out.put_u8(0),
    }
    out.put_u16(u16::try_from(note.keep).unwrap_or(u16::MAX));
    put_bytes(out, &note.payload);
}

struct Reader<'a> {
    bytes: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn peer(&mut self) -> Option<PeerId> {
        let raw: [u8; 16] = self.take(16)?.try_into().ok()?;
        let peer = PeerId::from_random(raw);
        // Only server-made ids (UUIDv4) exist; anything else is not ours.
        (peer.as_bytes() == &raw).then_some(peer)
    }

    fn str(&mut self) -> Option<&str> {
        let len = usize::from(self.u16()?);
        std::str::from_utf8(self.take(len)?).ok()
    }

    fn bytes(&mut self) -> Option<Bytes> {
        let len = self.u32()? as usize;
        let start = self.at;
        self.take(len)?;
        Some(self.bytes.slice(start..start + len))
    }

    fn group(&mut self) -> Option<Group> {
        Group::new(self.str()?).ok()
    }

    fn member(&mut self) -> Option<Member> {
        let peer = self.peer()?;
        let meta = self.bytes()?;
        (meta.len() <= MAX_META).then_some(Member { peer, meta })
    }

    fn note(&mut self) -> Option<Note> {
        let name = Name::new(self.str()?).ok()?;
        let except = match self.u8()? {
            0 => None,
            1 => Some(self.peer()?),
            _ => return None,
        };
        let keep = usize::from(self.u16()?);
        if keep > MAX_KEEP {
            return None;
        }
        let payload = self.bytes()?;
        Some(Note { name, payload, except, keep })
    }

    fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId::from_random([n; 16])
    }

    fn samples() -> Vec<Msg> {
        let group = Group::new("lobby").unwrap();
        let note = Note::new("room.say", "{\"t\":1}").unwrap().except(peer(1)).keep(10);
        let member = Member { peer: peer(2), meta: Bytes::from_static(b"{\"name\":\"a\"}") };
        vec![
            Msg::Deliver { to: peer(3), payload: Bytes::from_static(b"{}") },
            Msg::Note { origin: 7, group: Some(group.clone()), note: note.clone() },
            Msg::Note { origin: 7, group: None, note },
            Msg::Hello { origin: 1 },
            Msg::Bye { origin: 2 },
            Msg::Beat { origin: 3, seq: 9 },
            Msg::Delta { origin: 4, seq: 10, change: Change::Join(group.clone(), member.clone()) },
            Msg::Delta { origin: 4, seq: 11, change: Change::Leave(group.clone(), peer(2)) },
            Msg::Snapshot { origin: 5, seq: 12, rows: vec![(group.clone(), vec![member])] },
            Msg::SnapshotPlease { origin: 6 },
            Msg::HistoryPlease { group },
            Msg::Probe { origin: 8 },
            Msg::Resume { origin: 9, id: peer(4), secret: [5; 16] },
        ]
    }

    #[test]
    fn a_handover_comes_back_as_it_went() {
        let handover = Handover {
            groups: vec![(Group::new("lobby").unwrap(), Bytes::from_static(b"{}"))],
            held: vec![
                Held::Relay(Bytes::from_static(b"{\"from\":1}")),
                Held::Note(Name::new("room.say").unwrap(), Bytes::from_static(b"2")),
            ],
        };
        let bytes = encode_handover(Some(&handover));
        assert_eq!(decode_handover(&bytes), Some(Some(handover)));
        assert_eq!(decode_handover(&encode_handover(None)), Some(None));
        for cut in 0..bytes.len() {
            assert_eq!(decode_handover(&bytes.slice(..cut)), None, "cut at {cut}");
        }
    }

    #[test]
    fn every_message_comes_back_as_it_went() {
        for msg in samples() {
            assert_eq!(Msg::decode(&msg.encode()), Some(msg.clone()), "{msg:?}");
        }
        let notes = vec![Note::new("a", "1").unwrap().keep(2), Note::new("b", "2").unwrap()];
        assert_eq!(decode_notes(&encode_notes(notes.iter())), Some(notes));
    }

    #[test]
    fn anything_cut_short_or_extended_is_refused_without_a_panic() {
        for msg in samples() {
            let bytes = msg.encode();
            for end in 0..bytes.len() {
                assert_eq!(Msg::decode(&bytes.slice(..end)), None, "{msg:?} cut at {end}");
            }
            let mut longer = bytes.to_vec();
            longer.push(0);
            assert_eq!(Msg::decode(&Bytes::from(longer)), None);
            let mut other = bytes.to_vec();
            other[0] = VERSION + 1;
            assert_eq!(Msg::decode(&Bytes::from(other)), None);
        }
    }

    #[test]
    fn names_and_limits_are_checked_as_the_relay_checks_its_own() {
        let bad_group = {
            let mut out = BytesMut::new();
            out.put_u8(VERSION);
            out.put_u8(HISTORY_PLEASE);
            put_str(&mut out, "gotalk:all");
            out.freeze()
        };
        assert_eq!(Msg::decode(&bad_group), None, "a group name with a separator");
        let big_meta = Member { peer: peer(1), meta: Bytes::from(vec![b'x'; MAX_META + 1]) };
        let change = Change::Join(Group::new("g").unwrap(), big_meta);
        assert_eq!(Msg::decode(&Msg::Delta { origin: 1, seq: 1, change }.encode()), None);
        let mut note = Note::new("n", "").unwrap();
        note.keep = MAX_KEEP + 1;
        let msg = Msg::Note { origin: 1, group: None, note };
        assert_eq!(Msg::decode(&msg.encode()), None, "more kept than the relay allows");
        // A count far past the bytes that follow allocates nothing and fails.
        let mut huge = BytesMut::new();
        huge.put_u8(VERSION);
        huge.put_u8(SNAPSHOT);
        huge.put_u64(1);
        huge.put_u64(1);
        huge.put_u32(u32::MAX);
        assert_eq!(Msg::decode(&huge.freeze()), None);
        // A peer id that is not a server-made (version 4) id.
        let mut raw = BytesMut::new();
        raw.put_u8(VERSION);
        raw.put_u8(DELIVER);
        raw.put_slice(&[0u8; 16]);
        put_bytes(&mut raw, b"{}");
        assert_eq!(Msg::decode(&raw.freeze()), None);
    }
}
