//! Groups (rooms, topics): what a group is called, what is published to one, and who is in
//! one.
//!
//! A group's name becomes part of a channel name on a cluster's bus, so it is checked here,
//! once, before any bus sees it: no separator, wildcard or hash-tag character of Redis or NATS
//! can get through.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use gotalk_protocol::relay::PeerId;
use gotalk_protocol::{Name, NameTooLong};

/// The longest group name, in bytes of UTF-8.
pub const MAX_GROUP_LEN: usize = 64;
/// The largest member description ([`Member::meta`]), in bytes: it is copied to every
/// instance of a cluster.
pub const MAX_META: usize = 1024;
/// The most messages a group keeps for newcomers ([`Note::keep`]).
pub const MAX_KEEP: usize = 1000;

/// A group's name: 1 to [`MAX_GROUP_LEN`] bytes of letters and digits (of any script), `-`
/// and `_`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group(String);

/// Why a string is not a group name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a group name: 1 to 64 bytes of letters, digits, '-' and '_'")]
pub struct BadGroup(pub String);

impl Group {
    /// The group called `name`.
    ///
    /// # Errors
    /// [`BadGroup`] for an empty name, one over [`MAX_GROUP_LEN`] bytes, or one with any
    /// character other than a letter, a digit, `-` or `_`.
    pub fn new(name: impl Into<String>) -> Result<Self, BadGroup> {
        let name = name.into();
        let fits = !name.is_empty() && name.len() <= MAX_GROUP_LEN;
        if fits && name.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_') {
            Ok(Group(name))
        } else {
            Err(BadGroup(name))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Group {
    type Err = BadGroup;
    fn from_str(s: &str) -> Result<Self, BadGroup> {
        Group::new(s)
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Group({:?})", self.0)
    }
}

/// A message published to a group: the notification every member's connection receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The notification's name.
    pub name: Name,
    /// Its payload.
    pub payload: Bytes,
    /// A member that does not receive it (its sender, say).
    pub except: Option<PeerId>,
    /// How many of the group's latest messages to keep for newcomers, this one included
    /// (0: this one is not kept). At most [`MAX_KEEP`].
    pub keep: usize,
}

impl Note {
    /// The notification `name` with `payload`, sent to every member and not kept.
    ///
    /// # Errors
    /// [`NameTooLong`] for a name the protocol cannot carry.
    pub fn new(name: &str, payload: impl Into<Bytes>) -> Result<Self, NameTooLong> {
        Ok(Note { name: Name::new(name)?, payload: payload.into(), except: None, keep: 0 })
    }

    /// Leaves `peer` out.
    #[must_use]
    pub fn except(mut self, peer: PeerId) -> Self {
        self.except = Some(peer);
        self
    }

    /// Keeps this message among the group's last `count` (at most [`MAX_KEEP`]), which
    /// [`Relay::history`](super::Relay::history) returns.
    #[must_use]
    pub fn keep(mut self, count: usize) -> Self {
        self.keep = count.min(MAX_KEEP);
        self
    }
}

/// One member of a group, as every instance sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's relay id.
    pub peer: PeerId,
    /// What the application says about it (JSON text, or empty), at most [`MAX_META`] bytes:
    /// a name to show, say.
    pub meta: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_at_their_edges() {
        assert!(Group::new("a".repeat(MAX_GROUP_LEN)).is_ok());
        assert!(Group::new("a".repeat(MAX_GROUP_LEN + 1)).is_err());
        assert!(Group::new("").is_err());
        for good in ["lobby", "room_2", "café", "кухня", "聊天", "a-b"] {
            assert!(Group::new(good).is_ok(), "{good}");
        }
        // Separators and wildcards of Redis and NATS channel names, hash tags, spaces.
        for bad in ["a:b", "a.b", "a*", "a>", "{a}", "a b", "a\n", "a/b", "a\u{202e}"] {
            assert!(Group::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keep_is_capped() {
        let note = Note::new("n", "1").unwrap().keep(MAX_KEEP + 1);
        assert_eq!(note.keep, MAX_KEEP);
    }
}
