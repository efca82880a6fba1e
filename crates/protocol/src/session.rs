//! Resumable relay sessions on the wire: the token a server gives a peer, and the names of
//! the messages that carry it.
//!
//! A server that keeps sessions of peers that went away tells each peer of ours, right after
//! its id, the token of its session with the reserved notification [`SESSION`]. A peer that
//! reconnects within the server's grace period sends the reserved request [`RESUME`] with the
//! token as the first request of its new connection: the result is its old id, with its
//! groups, and the messages sent to it while it was away come next, in their order. Any
//! failure (an unknown, expired or wrong token) is the ErrorResult [`REFUSED`], the same
//! text for all, and the connection keeps the id it was given.
//!
//! | message | direction | payload |
//! |---|---|---|
//! | notification `$session` | server → peer | `"<id>.<secret>"` |
//! | request `$resume` | peer → server | `"<id>.<secret>"`; result `"<id>"` |
//!
//! The secret is 16 random bytes as 32 lowercase hex digits: whoever has the token is the
//! peer, so it is as private as a session cookie.

use std::fmt;

use crate::relay::PeerId;

/// The notification that tells a peer its session's token.
pub const SESSION: &str = "$session";
/// The request that takes a kept session over.
pub const RESUME: &str = "$resume";
/// The ErrorResult text for every refused [`RESUME`].
pub const REFUSED: &str = "resume refused";

/// A session's secret: 16 random bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret([u8; 16]);

impl Secret {
    /// A secret of these random bytes.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Secret(bytes)
    }

    /// The secret's bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// True when both secrets are the same, in a time that does not depend on where they
    /// differ, so guessing one byte at a time learns nothing.
    pub fn matches(&self, other: &Secret) -> bool {
        self.0.iter().zip(other.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never written to logs.
        f.write_str("Secret(..)")
    }
}

/// A session's token: the peer's id and the session's secret, written `<id>.<secret>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// The id the session keeps.
    pub id: PeerId,
    /// What proves the session is the presenter's.
    pub secret: Secret,
}

impl Token {
    /// Parses `<id>.<32 hex digits>`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Token> {
        let (id, secret) = text.split_once('.')?;
        let id = PeerId::parse(id).ok()?;
        let raw = secret.as_bytes();
        if raw.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, pair) in raw.chunks(2).enumerate() {
            bytes[i] = u8::try_from(crate::hex::parse_hex(pair)?).ok()?;
        }
        Some(Token { id, secret: Secret(bytes) })
    }

    /// Parses the JSON string a [`SESSION`] or [`RESUME`] payload carries.
    pub fn parse_json(payload: &[u8]) -> Option<Token> {
        let text: std::borrow::Cow<'_, str> = serde_json::from_slice(payload).ok()?;
        Token::parse(&text)
    }

    /// The token as a JSON string, the payload of [`SESSION`] and [`RESUME`].
    pub fn to_json(&self) -> String {
        format!("\"{self}\"")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.", self.id)?;
        for b in self.secret.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}.…)", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_what_it_writes() {
        let token = Token {
            id: PeerId::from_random([7; 16]),
            secret: Secret::from_random(*b"0123456789abcdef"),
        };
        let text = token.to_string();
        assert_eq!(text.len(), 36 + 1 + 32);
        assert_eq!(Token::parse(&text), Some(token));
        assert_eq!(Token::parse_json(token.to_json().as_bytes()), Some(token));
        assert!(!format!("{token:?}").contains(&text[37..]), "the secret stays out of logs");
    }

    #[test]
    fn anything_else_is_no_token() {
        let id = PeerId::from_random([7; 16]);
        for bad in [
            String::new(),
            id.to_string(),
            format!("{id}."),
            format!("{id}.{}", "0".repeat(31)),
            format!("{id}.{}", "0".repeat(33)),
            format!("{id}.{}", "g".repeat(32)),
            format!("{id}.{}+", "0".repeat(30)),
            format!("x.{}", "0".repeat(32)),
        ] {
            assert_eq!(Token::parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn secrets_match_only_when_equal() {
        let a = Secret::from_random([1; 16]);
        let mut other = [1; 16];
        assert!(a.matches(&Secret::from_random(other)));
        other[15] = 0;
        assert!(!a.matches(&Secret::from_random(other)));
    }
}
