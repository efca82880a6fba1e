//! The relay's wire format: peers address each other by id and topic through a server.
//!
//! A server that relays gives every connection a random [`PeerId`] and tells it first, with
//! the reserved notification [`ID`], to a peer known to understand it (see
//! [`crate::reserved`]). A peer sends a message to another with the reserved
//! request [`SEND`] (acknowledged: the result means the message was queued for the recipient)
//! or the reserved notification of the same name (fire and forget: a failure comes back as the
//! notification [`UNDELIVERED`]). The recipient gets the notification [`SEND`] carrying the
//! sender's id as the server knows it. The request [`WHOAMI`] answers the caller's id.
//!
//! Every payload is JSON, so gotalk.js pages build and read it with `JSON.stringify` and
//! `JSON.parse`; the body is any JSON value and is forwarded byte for byte, never re-encoded:
//!
//! | message | direction | payload |
//! |---|---|---|
//! | notification `$id` | server → peer | `"<id>"` |
//! | request `whoami` | peer → server | empty; result `"<id>"` |
//! | request or notification `$relay` | peer → server | `{"to":"<id>","topic":"chat","body":…}` |
//! | notification `$relay` | server → peer | `{"from":"<id>","topic":"chat","body":…}` |
//! | notification `$undelivered` | server → peer | `{"to":"<id>","topic":"chat","error":"unknown peer"}` |
//!
//! A request is answered with an empty result once the message is in the recipient's queue,
//! with a RetryResult [`QUEUE_FULL`] or [`UNAVAILABLE`] when it went nowhere and may be sent
//! again, and with an ErrorResult otherwise: a [`Fault`], or [`TIMEOUT`] when a gateway of a
//! cluster handed it to the bus between instances and heard nothing back (it may have been
//! delivered). A peer that cannot take a RetryResult gets those texts as ErrorResults; the
//! notification form reports each as the `error` of an [`UNDELIVERED`] notice.
//!
//! The id and topic are JSON strings and may use any of JSON's escapes (`\"`, `\\`, `\n`,
//! `\u00e9`, …), as `JSON.stringify` writes them: the topic is the decoded string, the one
//! delivered (re-encoded, so the recipient decodes the same string) and the one
//! [`MAX_TOPIC_LEN`] counts.
//!
//! This module parses and validates what a peer sends ([`parse_send`]) and encodes what the
//! server sends back, so faults are decided in one place: [`Fault`].

use std::borrow::Cow;
use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// The notification that tells a peer its id; the server sends it to a peer of ours as soon
/// as it knows the peer is one (see [`crate::reserved`]).
pub const ID: &str = "$id";
/// The request that asks the server for the caller's id. It is not `$`-prefixed because the
/// relay's specification names it; a server with the relay on answers it before any handler.
pub const WHOAMI: &str = "whoami";
/// The request or notification that sends a message, and the notification that delivers one.
pub const SEND: &str = "$relay";
/// The notification that tells a sender a fire-and-forget message was not delivered.
pub const UNDELIVERED: &str = "$undelivered";
/// The RetryResult text when the recipient's queue is full.
pub const QUEUE_FULL: &str = "recipient's queue is full";
/// The RetryResult text when a gateway of a cluster could not hand the message to the bus
/// between instances (the bus is down, or the sender has too many messages on their way): it
/// went nowhere, so sending it again is safe.
pub const UNAVAILABLE: &str = "relay unavailable";
/// The ErrorResult text when the bus took the message but no answer came back in time from
/// the recipient's instance: it may have been delivered, so sending it again may deliver it
/// twice.
pub const TIMEOUT: &str = "relay timeout";

/// The default largest body, in bytes of its JSON text: 64 KiB.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// The largest topic, in bytes of UTF-8 once its JSON escapes are decoded. Topics name
/// conversations, not content.
pub const MAX_TOPIC_LEN: usize = 255;
/// Bytes of envelope allowed around a body before the payload counts as too large without
/// parsing it: the keys and punctuation, an id, and a topic at its longest, with every
/// character of them escaped (`\u0074` is six bytes for one).
const ENVELOPE_SLACK: usize = 128 + 6 * 36 + 6 * MAX_TOPIC_LEN;

/// A peer's id: a random UUID (version 4), written as 36 lowercase characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId([u8; 16]);

impl PeerId {
    /// An id from 16 random bytes, with the version (4) and variant bits set.
    pub fn from_random(mut bytes: [u8; 16]) -> Self {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        PeerId(bytes)
    }

    /// The id's 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the 36-character form, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case).
    ///
    /// # Errors
    /// [`Fault::BadHeader`] for anything else.
    pub fn parse(text: &str) -> Result<Self, Fault> {
        let bad = || Fault::BadHeader(format!("{text:?} is not a peer id"));
        let raw = text.as_bytes();
        if raw.len() != 36 {
            return Err(bad());
        }
        let mut bytes = [0u8; 16];
        let mut nibbles = 0;
        for (i, &c) in raw.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return Err(bad());
                }
                continue;
            }
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(bad()),
            };
            bytes[nibbles / 2] |= if nibbles % 2 == 0 { v << 4 } else { v };
            nibbles += 1;
        }
        Ok(PeerId(bytes))
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 36];
        let mut at = 0;
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out[at] = b'-';
                at += 1;
            }
            out[at] = HEX[usize::from(b >> 4)];
            out[at + 1] = HEX[usize::from(b & 0xf)];
            at += 2;
        }
        // Only ASCII was written.
        f.write_str(std::str::from_utf8(&out).unwrap_or_default())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

impl std::str::FromStr for PeerId {
    type Err = Fault;
    fn from_str(s: &str) -> Result<Self, Fault> {
        PeerId::parse(s)
    }
}

impl Serialize for PeerId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Owned only when the text had escapes.
        let text = Cow::<'de, str>::deserialize(d)?;
        PeerId::parse(&text).map_err(D::Error::custom)
    }
}

/// Why a message was not relayed. Its `Display` is the text the sender gets, in an
/// ErrorResult or in an [`UNDELIVERED`] notice.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Fault {
    /// No live peer has this id, or the sender may not send to it: the two look the same, so
    /// a refusal reveals nothing about who is connected.
    #[error("unknown peer")]
    UnknownPeer,
    /// The envelope is not `{"to","topic","body"}` with a valid id and topic.
    #[error("bad header: {0}")]
    BadHeader(String),
    /// The body is larger than the server's limit.
    #[error("too large: the body is {size} bytes, the limit is {max}")]
    TooLarge {
        /// The body's size in bytes of JSON text (at least this many, when the whole payload
        /// was refused unread).
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// A message as a peer sends it, borrowed from the payload it was parsed from.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Send<'a> {
    /// The recipient.
    pub to: PeerId,
    /// The conversation, decoded: borrowed from the payload, or owned when its JSON text had
    /// escapes.
    #[serde(borrow)]
    pub topic: Cow<'a, str>,
    /// The body's JSON text, forwarded unchanged; JSON `null` when the sender left it out.
    #[serde(borrow, default = "null")]
    pub body: &'a RawValue,
}

/// A message as its recipient gets it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery<'a> {
    /// The sender, as the server knows it.
    pub from: PeerId,
    /// The conversation, decoded (owned when its JSON text had escapes).
    #[serde(borrow)]
    pub topic: Cow<'a, str>,
    /// The body's JSON text.
    #[serde(borrow)]
    pub body: &'a RawValue,
}

/// A notice that a fire-and-forget message was not delivered.
#[derive(Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Undelivered {
    /// The recipient it was addressed to, when the envelope named one that parses.
    pub to: Option<PeerId>,
    /// Its topic, when the envelope had one.
    pub topic: Option<String>,
    /// What went wrong: a [`Fault`]'s text.
    pub error: String,
}

fn null() -> &'static RawValue {
    RawValue::NULL
}

/// Parses and validates a message a peer sends, before anything is forwarded.
///
/// # Errors
/// [`Fault::TooLarge`] for a body over `max_body` bytes (a payload far beyond it is refused
/// without parsing); [`Fault::BadHeader`] for a payload that is not a valid envelope, a bad
/// id, or a topic that is empty or over [`MAX_TOPIC_LEN`] bytes once decoded (a topic that
/// decodes to a lone UTF-16 surrogate, `"\ud800"`, is not text and is a bad header too).
pub fn parse_send(payload: &[u8], max_body: usize) -> Result<Send<'_>, Fault> {
    if payload.len() > max_body.saturating_add(ENVELOPE_SLACK) {
        let size = payload.len().saturating_sub(ENVELOPE_SLACK);
        return Err(Fault::TooLarge { size, max: max_body });
    }
    let send: Send<'_> = serde_json::from_slice(payload).map_err(|e| {
        // The id's own parse error is the clearer one.
        Fault::BadHeader(e.to_string())
    })?;
    check_topic(&send.topic)?;
    let size = send.body.get().len();
    if size > max_body {
        return Err(Fault::TooLarge { size, max: max_body });
    }
    Ok(send)
}

/// Checks a topic: 1 to [`MAX_TOPIC_LEN`] bytes.
///
/// # Errors
/// [`Fault::BadHeader`] otherwise.
pub fn check_topic(topic: &str) -> Result<(), Fault> {
    if topic.is_empty() {
        return Err(Fault::BadHeader("the topic is empty".into()));
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(Fault::BadHeader(format!(
            "the topic is {} bytes, the limit is {MAX_TOPIC_LEN}",
            topic.len()
        )));
    }
    Ok(())
}

/// What a server's recipient gets for `send` from `from`.
pub fn encode_delivery(from: PeerId, send: &Send<'_>) -> Vec<u8> {
    let delivery = Delivery { from, topic: Cow::Borrowed(&send.topic), body: send.body };
    // Serializing borrowed strings and a raw value into a Vec cannot fail.
    serde_json::to_vec(&delivery).unwrap_or_default()
}

/// What a peer sends to reach `to`: `body` is JSON text.
///
/// # Errors
/// [`Fault::BadHeader`] for a topic out of bounds or a body that is not JSON.
pub fn encode_send(to: PeerId, topic: &str, body: &str) -> Result<Vec<u8>, Fault> {
    check_topic(topic)?;
    let body: &RawValue =
        serde_json::from_str(body).map_err(|e| Fault::BadHeader(format!("body: {e}")))?;
    Ok(serde_json::to_vec(&Send { to, topic: Cow::Borrowed(topic), body }).unwrap_or_default())
}

/// Parses a delivery, on the recipient's side.
///
/// # Errors
/// [`Fault::BadHeader`] when the payload is not a delivery.
pub fn parse_delivery(payload: &[u8]) -> Result<Delivery<'_>, Fault> {
    serde_json::from_slice(payload).map_err(|e| Fault::BadHeader(e.to_string()))
}

/// The [`UNDELIVERED`] notice for a payload that failed with `error` (a [`Fault`]'s text, or
/// [`QUEUE_FULL`]): it names the recipient and topic when the payload got that far.
pub fn encode_undelivered(payload: &[u8], error: &str) -> Vec<u8> {
    /// The envelope's addressing alone, read leniently so a notice can say what it can.
    #[derive(Deserialize)]
    struct Addressing {
        to: Option<String>,
        topic: Option<String>,
    }
    let addressing = serde_json::from_slice::<Addressing>(payload).ok();
    let (to, topic) = match addressing {
        Some(a) => (a.to.and_then(|t| PeerId::parse(&t).ok()), a.topic),
        None => (None, None),
    };
    let topic = topic.filter(|t| check_topic(t).is_ok());
    let notice = Undelivered { to, topic, error: error.to_owned() };
    serde_json::to_vec(&notice).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    #[test]
    fn ids_round_trip_in_lowercase_and_are_version_4() {
        let id = PeerId::parse(A).unwrap();
        assert_eq!(id.to_string(), A);
        assert_eq!(PeerId::parse(&A.to_uppercase()).unwrap(), id);
        let random = PeerId::from_random([0xff; 16]);
        assert_eq!(random.to_string(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let zero = PeerId::from_random([0; 16]);
        assert_eq!(zero.to_string(), "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn malformed_ids_are_bad_headers() {
        for text in [
            "",
            &A[..35],
            &format!("{A}0"),
            "0f8fad5bd9cb-469f-a165-70867728950e0",
            "0f8fad5b-d9cb-469f-a165-70867728950g",
            "0f8fad5b+d9cb-469f-a165-70867728950e",
        ] {
            assert!(matches!(PeerId::parse(text), Err(Fault::BadHeader(_))), "{text:?}");
        }
    }

    #[test]
    fn a_send_parses_and_its_delivery_carries_the_given_sender() {
        let payload = format!(r#"{{"to":"{A}","topic":"chat","body":{{"text":"hi"}}}}"#);
        let send = parse_send(payload.as_bytes(), DEFAULT_MAX_BODY).unwrap();
        assert_eq!(send.to.to_string(), A);
        assert_eq!(send.topic, "chat");
        assert_eq!(send.body.get(), r#"{"text":"hi"}"#);
        let from = PeerId::from_random([7; 16]);
        let delivered = encode_delivery(from, &send);
        let expected = format!(r#"{{"from":"{from}","topic":"chat","body":{{"text":"hi"}}}}"#);
        assert_eq!(String::from_utf8(delivered.clone()).unwrap(), expected);
        let back = parse_delivery(&delivered).unwrap();
        assert_eq!((back.from, &*back.topic, back.body.get()), (from, "chat", r#"{"text":"hi"}"#));
        // Without escapes nothing is copied.
        assert!(matches!(back.topic, Cow::Borrowed(_)));
    }

    #[test]
    fn topics_with_json_escapes_are_decoded_and_delivered_as_the_same_string() {
        let to = PeerId::parse(A).unwrap();
        let from = PeerId::from_random([7; 16]);
        for (json, topic) in [
            (r#""say \"hi\"""#, "say \"hi\""),
            (r#""C:\\dir""#, "C:\\dir"),
            (r#""two\nlines""#, "two\nlines"),
            (r#""a\tb""#, "a\tb"),
            (r#""\r\b\f\/""#, "\r\u{8}\u{c}/"),
            (r#""\u0074opic \u00e9 \u0000 \u001b[2J""#, "topic é \0 \u{1b}[2J"),
            (r#""\ud83d\ude00""#, "😀"),
        ] {
            let payload = format!(r#"{{"to":"{A}","topic":{json},"body":1}}"#);
            let send = parse_send(payload.as_bytes(), 10).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(send.topic, topic, "{json}");
            let delivered = encode_delivery(from, &send);
            let back = parse_delivery(&delivered).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(back.topic.as_bytes(), topic.as_bytes(), "{json}: delivered");
            assert_eq!(back.body.get(), "1");
            // What our clients send round-trips too.
            let wire = encode_send(to, topic, "1").unwrap();
            assert_eq!(parse_send(&wire, 10).unwrap().topic, topic, "{json}: sent");
        }
    }

    #[test]
    fn an_escaped_id_parses_and_escapes_that_are_not_text_are_bad_headers() {
        let escaped = format!("\\u0030{}", &A[1..]);
        let payload = format!(r#"{{"to":"{escaped}","topic":"t"}}"#);
        assert_eq!(parse_send(payload.as_bytes(), 10).unwrap().to, PeerId::parse(A).unwrap());
        // A lone surrogate, no JSON escape, or a raw control character: refused.
        for json in [r#""\ud800""#, r#""\ude00x""#, r#""\x41""#, r#""\u12""#, "\"a\u{1}b\""] {
            let payload = format!(r#"{{"to":"{A}","topic":{json},"body":1}}"#);
            let got = parse_send(payload.as_bytes(), 10);
            assert!(matches!(got, Err(Fault::BadHeader(_))), "{json}: {got:?}");
        }
    }

    #[test]
    fn the_topic_limit_counts_decoded_bytes() {
        // Each `\u0074` is six bytes of JSON and one of topic.
        let at = "\\u0074".repeat(MAX_TOPIC_LEN);
        let payload = format!(r#"{{"to":"{A}","topic":"{at}","body":1}}"#);
        assert_eq!(parse_send(payload.as_bytes(), 1).unwrap().topic.len(), MAX_TOPIC_LEN);
        let over = "\\u0074".repeat(MAX_TOPIC_LEN + 1);
        let payload = format!(r#"{{"to":"{A}","topic":"{over}","body":1}}"#);
        assert_eq!(
            parse_send(payload.as_bytes(), 1).unwrap_err(),
            Fault::BadHeader(format!("the topic is 256 bytes, the limit is {MAX_TOPIC_LEN}"))
        );
        // A topic of newlines at the limit, sent and delivered escaped.
        let lines = "\n".repeat(MAX_TOPIC_LEN);
        let wire = encode_send(PeerId::parse(A).unwrap(), &lines, "1").unwrap();
        let send = parse_send(&wire, 1).unwrap();
        assert_eq!(send.topic, lines);
        let delivered = encode_delivery(PeerId::from_random([1; 16]), &send);
        assert_eq!(parse_delivery(&delivered).unwrap().topic, lines);
    }

    #[test]
    fn a_fully_escaped_envelope_with_a_body_at_the_limit_is_parsed() {
        let esc =
            |text: &str| text.chars().map(|c| format!("\\u{:04x}", c as u32)).collect::<String>();
        let body = format!(r#""{}""#, "x".repeat(98));
        let payload = format!(
            r#"{{"{}":"{}","{}":"{}","{}":{body}}}"#,
            esc("to"),
            esc(A),
            esc("topic"),
            esc(&"t".repeat(MAX_TOPIC_LEN)),
            esc("body"),
        );
        let send = parse_send(payload.as_bytes(), 100).unwrap();
        let got = (send.to, send.topic.len(), send.body.get().len());
        assert_eq!(got, (PeerId::parse(A).unwrap(), MAX_TOPIC_LEN, 100));
    }

    #[test]
    fn a_missing_body_is_null() {
        let payload = format!(r#"{{"to":"{A}","topic":"t"}}"#);
        assert_eq!(parse_send(payload.as_bytes(), 10).unwrap().body.get(), "null");
    }

    #[test]
    fn encode_send_round_trips() {
        let to = PeerId::parse(A).unwrap();
        let wire = encode_send(to, "t", "[1, 2]").unwrap();
        let send = parse_send(&wire, DEFAULT_MAX_BODY).unwrap();
        assert_eq!((send.to, &*send.topic, send.body.get()), (to, "t", "[1, 2]"));
        assert!(matches!(encode_send(to, "", "1"), Err(Fault::BadHeader(_))));
        assert!(matches!(encode_send(to, "t", "{"), Err(Fault::BadHeader(_))));
    }

    #[test]
    fn malformed_envelopes_are_bad_headers() {
        for payload in [
            "".to_owned(),
            "{".to_owned(),
            "[]".to_owned(),
            "null".to_owned(),
            r#"{"topic":"t","body":1}"#.to_owned(),
            format!(r#"{{"to":"{A}","body":1}}"#),
            r#"{"to":"nope","topic":"t","body":1}"#.to_owned(),
            format!(r#"{{"to":"{A}","topic":7,"body":1}}"#),
            format!(r#"{{"to":"{A}","topic":"t","body":1,"from":"{A}"}}"#),
            format!(r#"{{"to":"{A}","topic":"t","body":}}"#),
            format!(r#"{{"to":"{A}","topic":"","body":1}}"#),
        ] {
            let got = parse_send(payload.as_bytes(), DEFAULT_MAX_BODY);
            assert!(matches!(got, Err(Fault::BadHeader(_))), "{payload}: {got:?}");
        }
    }

    #[test]
    fn the_topic_limit_holds_at_its_edge() {
        let at = "t".repeat(MAX_TOPIC_LEN);
        let payload = format!(r#"{{"to":"{A}","topic":"{at}","body":1}}"#);
        assert!(parse_send(payload.as_bytes(), 1).is_ok());
        let over = "t".repeat(MAX_TOPIC_LEN + 1);
        let payload = format!(r#"{{"to":"{A}","topic":"{over}","body":1}}"#);
        assert!(matches!(parse_send(payload.as_bytes(), 1), Err(Fault::BadHeader(_))));
    }

    #[test]
    fn the_body_limit_holds_at_its_edge() {
        // A JSON string of n characters is n + 2 bytes of JSON text.
        let body = |n: usize| format!(r#"{{"to":"{A}","topic":"t","body":"{}"}}"#, "x".repeat(n));
        assert!(parse_send(body(98).as_bytes(), 100).is_ok());
        assert_eq!(
            parse_send(body(99).as_bytes(), 100).unwrap_err(),
            Fault::TooLarge { size: 101, max: 100 }
        );
        // Far past the limit: refused without parsing, still as too large.
        let huge = body(10_000);
        assert!(matches!(parse_send(huge.as_bytes(), 100), Err(Fault::TooLarge { .. })));
    }

    #[test]
    fn notices_say_what_they_can() {
        let payload = format!(r#"{{"to":"{A}","topic":"t","body":1}}"#);
        let notice = encode_undelivered(payload.as_bytes(), "unknown peer");
        let notice: Undelivered = serde_json::from_slice(&notice).unwrap();
        assert_eq!(notice.to, Some(PeerId::parse(A).unwrap()));
        assert_eq!(notice.topic.as_deref(), Some("t"));
        assert_eq!(notice.error, "unknown peer");
        let notice = encode_undelivered(b"\x00garbage", "bad header: x");
        let notice: Undelivered = serde_json::from_slice(&notice).unwrap();
        assert_eq!(notice, Undelivered { to: None, topic: None, error: "bad header: x".into() });
    }
}
