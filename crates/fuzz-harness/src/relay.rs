//! The relay's envelope: what a peer sends to reach another, and what the recipient gets.

use gotalk_protocol::relay::{
    encode_delivery, encode_send, encode_undelivered, parse_delivery, parse_send, PeerId,
    Undelivered, MAX_TOPIC_LEN,
};

/// The first byte picks the body limit; the rest is a payload as a peer would send it.
///
/// Checks that parsing never panics and stays within its limits, that a parsed envelope
/// delivers and re-sends unchanged, that a notice of non-delivery is always valid, and that
/// peer ids round-trip through their text.
pub fn relay_envelope(data: &[u8]) {
    let Some((&knob, payload)) = data.split_first() else { return };
    let max_body = usize::from(knob) * 16;
    let from = PeerId::from_random([knob; 16]);

    if let Ok(send) = parse_send(payload, max_body) {
        assert!(!send.topic.is_empty() && send.topic.len() <= MAX_TOPIC_LEN);
        assert!(send.body.get().len() <= max_body, "a body over the limit was accepted");
        let delivered = encode_delivery(from, &send);
        let delivery = parse_delivery(&delivered).expect("a delivery we encoded parses");
        assert_eq!(delivery.from, from);
        assert_eq!(delivery.topic, send.topic);
        assert_eq!(delivery.body.get(), send.body.get());
        let resent = encode_send(send.to, &send.topic, send.body.get()).expect("re-encodes");
        let again = parse_send(&resent, max_body).expect("a re-encoded envelope parses");
        assert_eq!((again.to, &again.topic), (send.to, &send.topic));
        assert_eq!(again.body.get(), send.body.get());
    }
    let _ = parse_delivery(payload);

    let notice = encode_undelivered(payload, "unknown peer");
    let notice: Undelivered = serde_json::from_slice(&notice).expect("a notice is valid JSON");
    assert_eq!(notice.error, "unknown peer");
    if let Some(topic) = &notice.topic {
        assert!(!topic.is_empty() && topic.len() <= MAX_TOPIC_LEN);
    }

    if let Ok(text) = std::str::from_utf8(payload) {
        if let Ok(id) = PeerId::parse(text) {
            assert_eq!(PeerId::parse(&id.to_string()), Ok(id), "a peer id round-trips");
        }
    }
}
